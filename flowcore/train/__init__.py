"""Trainer utilities: distributed set-up, EMA, atomic safetensors checkpoints with exact resume,
the training driver, and the pictures and tables of a run.

Nothing in flowcore's primitives depends on this package; a researcher with their own trainer can
ignore it or take single pieces (``EMA``, ``save_checkpoint``/``load_checkpoint``).
"""

from flowcore.train.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    checkpoint_info,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from flowcore.train.distributed import (
    Dist,
    close_distributed,
    init_distributed,
    prepare_model,
    seed_everything,
    sync_gradients,
)
from flowcore.train.ema import EMA, ema_name
from flowcore.train.files import to_jsonable, write_json
from flowcore.train.loop import CHECKPOINT_NAME, RESUME_MAY_DIFFER, History, NonFiniteLossError, train_loop
from flowcore.train.outputs import format_table, image_grid, print_table, save_image_grid, save_loss_curve, save_scatter

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "CheckpointInfo",
    "Dist",
    "EMA",
    "History",
    "NonFiniteLossError",
    "RESUME_MAY_DIFFER",
    "checkpoint_info",
    "close_distributed",
    "ema_name",
    "format_table",
    "image_grid",
    "init_distributed",
    "load_checkpoint",
    "load_weights",
    "prepare_model",
    "print_table",
    "save_checkpoint",
    "save_image_grid",
    "save_loss_curve",
    "save_scatter",
    "seed_everything",
    "sync_gradients",
    "to_jsonable",
    "train_loop",
    "write_json",
]
