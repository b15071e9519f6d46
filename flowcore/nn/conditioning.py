"""Conditioning shared by flowcore's networks: time embeddings, class labels, scalar conditions.

Every flowcore network is called as ``model(z, t, s, y=None, c=None)``:

- ``z`` (B, ...): the noisy sample at time ``t``;
- ``t``, ``s`` (B,): float times, ``t`` the noise level of ``z``, ``s <= t`` the target time
  (a velocity model passes ``s = t``);
- ``y`` (B,) int64: class labels of a class-conditional model; ``num_classes`` is the null class
  (classifier-free-guidance label dropout);
- ``c`` (B, n_scalar_conds): extra per-sample scalars (guidance scale, CFG interval, ...), each
  embedded like a time. Keep them O(1): embed ``1 - 1/w`` rather than a raw guidance scale ``w``.

Each condition becomes one ``width``-dimensional embedding; adaLN-style models sum them, in-context
models use them as tokens. Every embedding is built from differentiable torch ops only, so
``torch.func.jvp`` can take d/dt and d/ds through them.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import nn

TIME_SCALE = 30.0
"""Highest angular frequency of the time features. DiT/ADM use 1000 (t scaled to [0, 1000]); flow
maps differentiate the network in t, and |d phi/dt| reaches this value, so a smaller scale keeps the
JVP tangent tame (sCM, Lu & Song 2025, also shrinks its time-embedding scale for this reason);
MeanFlow and pixel MeanFlow trained markedly better with 30 than with 1000 in calibration runs."""
MAX_PERIOD = 1000.0
"""Longest period of the sinusoids, in units of the scaled time."""
FREQUENCY_FEATURES = 256
"""Number of sinusoidal features (half cosines, half sines) fed to each embedding MLP."""


class TimeInputs(enum.Enum):
    """Which functions of (t, s) the network embeds.

    T_S: t and s.  T_GAP: t and the gap t - s.  GAP: only t - s (iMF's "noise-unconditional"
    choice, following arXiv 2502.13129).
    """

    T_S = "t_s"
    T_GAP = "t_gap"
    GAP = "gap"


def time_inputs_of(kind: TimeInputs, t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The scalars embedded for ``kind``: (t, s), (t, t - s) or (t - s,)."""
    if kind is TimeInputs.T_S:
        return (t, s)
    if kind is TimeInputs.T_GAP:
        return (t, t - s)
    return (t - s,)


def n_time_inputs(kind: TimeInputs) -> int:
    return 1 if kind is TimeInputs.GAP else 2


def sinusoidal_features(
    x: torch.Tensor, n_features: int = FREQUENCY_FEATURES, scale: float = TIME_SCALE, max_period: float = MAX_PERIOD
) -> torch.Tensor:
    """phi(x) = [cos(omega_k x), sin(omega_k x)]_k,  omega_k = scale * max_period^(-k / (n/2)), k < n/2.

    With the defaults the angular frequencies are log-spaced from 30 down to 0.03, so phi resolves
    time differences of a few 1e-2 (enough for 50-step samplers) while its slowest features stay
    nearly linear on [0, 1], and |d phi / dx| <= 30 keeps d/dt of the network moderate. (N,) -> (N, n_features).
    """
    half = n_features // 2
    k = torch.arange(half, device=x.device, dtype=x.dtype)
    omega = scale * torch.exp(-math.log(max_period) * k / half)
    angle = x[:, None] * omega[None, :]
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)


class ScalarEmbedding(nn.Module):
    """e(x) = W2 SiLU(W1 phi(x) + b1) + b2: sinusoidal features of a scalar, then a small MLP."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(FREQUENCY_FEATURES, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_features(x).to(self.fc1.weight.dtype)
        return self.fc2(nn.functional.silu(self.fc1(features)))


class ConditionEmbeddings(nn.Module):
    """All conditions of one call as embeddings, stacked: (B, K, width).

    Order: the time inputs (per ``TimeInputs``), the class label (if ``num_classes > 0``; a table
    with ``num_classes + 1`` rows, the last one the learned null class), then the scalar conditions.
    """

    def __init__(self, width: int, time_inputs: TimeInputs, num_classes: int, n_scalar_conds: int):
        super().__init__()
        self.time_inputs = time_inputs
        self.times = nn.ModuleList(ScalarEmbedding(width) for _ in range(n_time_inputs(time_inputs)))
        self.classes = nn.Embedding(num_classes + 1, width) if num_classes > 0 else None
        if self.classes is not None:
            nn.init.normal_(self.classes.weight, std=0.02)
        self.scalars = nn.ModuleList(ScalarEmbedding(width) for _ in range(n_scalar_conds))

    def forward(self, t: torch.Tensor, s: torch.Tensor, y: torch.Tensor | None, c: torch.Tensor | None) -> torch.Tensor:
        embeddings = [embed(x) for embed, x in zip(self.times, time_inputs_of(self.time_inputs, t, s))]
        if self.classes is not None:
            embeddings.append(self.classes(y))
        embeddings.extend(embed(c[:, i]) for i, embed in enumerate(self.scalars))
        return torch.stack(embeddings, dim=1)


def check_call(
    model: str,
    z: torch.Tensor,
    t: torch.Tensor,
    s: torch.Tensor,
    y: torch.Tensor | None,
    c: torch.Tensor | None,
    *,
    num_classes: int,
    n_scalar_conds: int,
) -> None:
    """Raise a ValueError/TypeError naming the argument when a call breaks the model signature.

    Only shapes, dtypes and label ranges are checked: time values are not, so that finite
    differences may step around t and samplers/targets own the s <= t, t in [0, 1] checks.
    """
    for name, x in (("z", z), ("t", t), ("s", s)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{model}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{model}: {name} must be a floating-point tensor, got {x.dtype}")
    batch = z.shape[0] if z.dim() > 0 else None
    for name, x in (("t", t), ("s", s)):
        if x.dim() != 1 or x.shape[0] != batch:
            raise ValueError(f"{model}: {name} must have shape (B,) = ({batch},) matching z, got {tuple(x.shape)}")
    if num_classes > 0:
        if y is None:
            raise ValueError(f"{model}: y (class labels) is required: the model is class-conditional with num_classes={num_classes}; pass y = num_classes for the null class")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64:
            raise TypeError(f"{model}: y must be an int64 tensor, got {getattr(y, 'dtype', type(y).__name__)}")
        if y.shape != (batch,):
            raise ValueError(f"{model}: y must have shape (B,) = ({batch},), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > num_classes):
            raise ValueError(f"{model}: y must lie in [0, {num_classes}] ({num_classes} = null class), got values in [{int(y.min())}, {int(y.max())}]")
    elif y is not None:
        raise ValueError(f"{model}: y was given but the model is unconditional (num_classes=0)")
    if n_scalar_conds > 0:
        if c is None:
            raise ValueError(f"{model}: c (scalar conditions) is required: the model takes n_scalar_conds={n_scalar_conds}")
        if not isinstance(c, torch.Tensor) or not c.is_floating_point():
            raise TypeError(f"{model}: c must be a floating-point tensor, got {getattr(c, 'dtype', type(c).__name__)}")
        if c.shape != (batch, n_scalar_conds):
            raise ValueError(f"{model}: c must have shape (B, n_scalar_conds) = ({batch}, {n_scalar_conds}), got {tuple(c.shape)}")
    elif c is not None:
        raise ValueError(f"{model}: c was given but the model takes no scalar conditions (n_scalar_conds=0)")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x * (1 + scale) + shift (DiT, Peebles & Xie 2023); shift, scale (B, W)
    broadcast over the token axes of x."""
    while shift.dim() < x.dim():
        shift, scale = shift.unsqueeze(1), scale.unsqueeze(1)
    return x * (1 + scale) + shift


class AdaptiveOutput(nn.Module):
    """Final layer out = W_o modulate(LN(h), shift, scale) + b_o with (shift, scale) = W_m cond + b_m.

    W_m, b_m, W_o and b_o are zero at init, so the network starts at exactly zero output.
    ``cond`` is the already-SiLU'd conditioning vector.
    """

    def __init__(self, width: int, cond_width: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = zero_init(nn.Linear(cond_width, 2 * width))
        self.linear = zero_init(nn.Linear(width, out_features))

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(cond).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(h), shift, scale))


def zero_init(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
