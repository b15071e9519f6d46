"""Tests run with one intra-op thread: the models are tiny, and two threads on a loaded 2-core
machine (or beside the torchrun subprocesses some tests start) oversubscribe the cores."""

import torch

torch.set_num_threads(1)
