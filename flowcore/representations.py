"""Representations for representation-alignment methods (REPA, Latent Forcing): a small frozen
self-supervised encoder of clean 8x8 digits, a per-token projection head, the REPA alignment loss,
and a way to read a transformer's hidden state after block k.

- ``DigitsEncoder``: conv encoder x (B, 1, 8, 8) in [-1, 1] -> feature map (B, 16, 4, 4). Cell i of
  the 4x4 grid (row-major) lines up with token i of a DiT with patch 2 on 8x8 images
  (``feature_tokens``). The shipped weights (``flowcore/assets/digits_encoder.safetensors``, float16,
  loaded as float32) are trained without labels by ``scripts/train_digits_encoder.py``; it is NOT the judge
  (``flowcore.metrics.DigitsClassifier``), whose features the Frechet distance uses.
- ``ProjectionHead``: per-token MLP D -> hidden -> hidden -> z_dim with SiLU (REPA's projector).
- ``repa_alignment_loss``: mean over batch and tokens of -cos(h, sg z) (Yu et al. 2025, arXiv 2410.06938).
- ``capture_block_output``: a context manager that records the output of ``model.blocks[k - 1]``
  with a forward hook, leaving the model's code and behaviour unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
from collections.abc import Iterator
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

ENCODER_KIND = "digits_encoder"
ENCODER_FORMAT = "1"
FEATURE_CHANNELS = 16
GRID = 4


class DigitsEncoder(nn.Module):
    """A small conv encoder of clean digits (B, 1, 8, 8) in [-1, 1] -> (B, 16, 4, 4):

    conv3x3(1 -> 32) SiLU, conv3x3(32 -> 32) SiLU, conv3x3 stride 2 (32 -> 64) SiLU (4x4 grid),
    conv3x3(64 -> 64) SiLU, conv1x1(64 -> 16). Receptive field of a 4x4 cell: the whole image
    (11x11 pixels), so every cell sees its neighbourhood and the digit's global shape.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.SiLU(),
            nn.Conv2d(64, FEATURE_CHANNELS, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"DigitsEncoder: x must have shape (B, 1, 8, 8), got {got}")
        return self.net(x)


def feature_tokens(features: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C): token i is grid cell (i // W, i % W), row-major, as DiT patches."""
    if not isinstance(features, Tensor) or features.dim() != 4:
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"feature_tokens: features must have shape (B, C, H, W), got {got}")
    return features.flatten(2).transpose(1, 2)


def _frozen(encoder: DigitsEncoder) -> DigitsEncoder:
    return encoder.eval().requires_grad_(False)


def random_digits_encoder(seed: int) -> DigitsEncoder:
    """A ``DigitsEncoder`` with PyTorch's default init drawn from ``torch.manual_seed(seed)`` (the
    global RNG state is restored afterwards), eval mode, every parameter frozen: REPA's control."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = DigitsEncoder()
    return _frozen(encoder)


def default_encoder_path() -> Path:
    return Path(str(importlib.resources.files("flowcore") / "assets" / "digits_encoder.safetensors"))


def read_encoder_file(path: str | os.PathLike | None = None) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(metadata, tensors) of an encoder safetensors file (default: the shipped one); errors name the file."""
    path = Path(path) if path is not None else default_encoder_path()
    if not path.is_file():
        raise FileNotFoundError(f"no digits encoder weights at {path}: run `python scripts/train_digits_encoder.py` to create them")
    try:
        with safetensors.safe_open(os.fspath(path), framework="pt") as f:
            return f.metadata() or {}, {key: f.get_tensor(key) for key in f.keys()}
    except safetensors.SafetensorError as err:
        raise ValueError(f"{path} is not a valid safetensors file: {err}") from err


def encoder_metadata(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The metadata stored with the encoder weights (training script, seed, steps, data hash, probe accuracies)."""
    return read_encoder_file(path)[0]


def load_digits_encoder(path: str | os.PathLike | None = None) -> DigitsEncoder:
    """The trained ``DigitsEncoder`` from safetensors (default ``flowcore/assets/digits_encoder.safetensors``),
    in eval mode with every parameter frozen. Raises if the file is missing, is not a flowcore digits
    encoder, or its tensors do not match the architecture (naming the file and the keys)."""
    shown = Path(path) if path is not None else default_encoder_path()
    metadata, tensors = read_encoder_file(path)
    if metadata.get("flowcore_kind") != ENCODER_KIND or metadata.get("format") != ENCODER_FORMAT:
        raise ValueError(f"{shown} is not a flowcore digits encoder: metadata flowcore_kind={metadata.get('flowcore_kind')!r}, "
                         f"format={metadata.get('format')!r} (expected {ENCODER_KIND!r}, {ENCODER_FORMAT!r})")
    encoder = DigitsEncoder()
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise ValueError(f"{shown} does not match DigitsEncoder: missing {missing}, unexpected {extra}, wrong shapes {wrong}")
    if not all(v.is_floating_point() for v in tensors.values()):
        raise ValueError(f"{shown} holds non-floating-point tensors")
    encoder.load_state_dict(tensors)  # stored in float16, copied into the float32 parameters
    return _frozen(encoder)


class ProjectionHead(nn.Module):
    """REPA's projector, applied per token: h = W3 SiLU(W2 SiLU(W1 x)) (biases included),
    (B, N, in_dim) -> (B, N, out_dim); widths in_dim -> hidden -> hidden -> out_dim."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden", hidden), ("out_dim", out_dim)):
            if value < 1:
                raise ValueError(f"ProjectionHead: {name} must be >= 1, got {value}")
        self.in_dim = in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"ProjectionHead: input must have shape (B, N, {self.in_dim}), got {tuple(x.shape)}")
        return self.net(x)


def repa_alignment_loss(h: Tensor, z: Tensor) -> Tensor:
    """REPA's representation-alignment loss (Yu et al. 2025, arXiv 2410.06938, eq. 8):

        L = -(1 / (B N)) sum_b sum_n  <h_bn, sg z_bn> / (||h_bn|| ||z_bn||)

    h: projected hidden states of the generator (B, N, D) (the noisy input's tokens), z: the frozen
    encoder's features of the clean image (B, N, D), token n of h aligned with token n of z. z is
    detached (a target). A scalar, mean over batch and tokens; minimum -1 where every h_bn is a
    positive multiple of z_bn. Norms are clamped at 1e-12 (F.normalize).
    """
    if not isinstance(h, Tensor) or not isinstance(z, Tensor):
        raise TypeError("repa_alignment_loss: h and z must be Tensors")
    if h.dim() != 3 or h.shape != z.shape:
        raise ValueError(f"repa_alignment_loss: h and z must both have shape (B, N, D), got {tuple(h.shape)} and {tuple(z.shape)}")
    if not (h.is_floating_point() and z.is_floating_point()):
        raise TypeError(f"repa_alignment_loss: h and z must be floating point, got {h.dtype} and {z.dtype}")
    cos = (F.normalize(h, dim=-1) * F.normalize(z.detach(), dim=-1)).sum(dim=-1)
    return -cos.mean()


@contextlib.contextmanager
def capture_block_output(model: nn.Module, k: int) -> Iterator[dict[str, Tensor]]:
    """Record the hidden state after transformer block k (1-based) of ``model`` (anything with a
    ``blocks`` ModuleList, e.g. ``flowcore.nn.DiT``; a DistributedDataParallel wrapper is unwrapped
    and its inner module hooked). Yields a dict whose key "hidden" holds the output of
    ``blocks[k - 1]`` of the latest forward pass (all tokens, prefix tokens included: a DiT's image
    tokens are the last grid^2). The model's outputs are unchanged; the hook is removed on exit.

        with capture_block_output(net, 2) as captured:
            out = net(z, t, t, y)
        h = captured["hidden"]
    """
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    blocks = getattr(inner, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"capture_block_output: {type(inner).__name__} has no `blocks` ModuleList")
    if not 1 <= k <= len(blocks):
        raise ValueError(f"capture_block_output: k must be in [1, {len(blocks)}] (1-based block index), got {k}")
    captured: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        captured["hidden"] = output

    handle = blocks[k - 1].register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
