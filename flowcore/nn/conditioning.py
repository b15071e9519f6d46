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
from collections.abc import Iterable

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

    def __str__(self) -> str:
        return self.value


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


def check_decoupled_blocks(model: str, decoupled_blocks: int, depth: int, time_inputs: TimeInputs) -> None:
    """Raise unless 0 <= decoupled_blocks <= depth and (when > 0) the time inputs include t."""
    if not 0 <= decoupled_blocks <= depth:
        raise ValueError(f"{model}: decoupled_blocks must be in [0, depth={depth}], got {decoupled_blocks}")
    if decoupled_blocks and time_inputs is TimeInputs.GAP:
        raise ValueError(f"{model}: decoupled_blocks > 0 needs a time input that contains t (T_GAP or T_S), not GAP: a decoupled block sees one time")


def check_aux_head_depth(model: str, aux_head: bool, aux_head_depth: int, depth: int) -> None:
    """Raise unless 0 <= aux_head_depth <= depth, and aux_head_depth > 0 only with an aux head."""
    if not 0 <= aux_head_depth <= depth:
        raise ValueError(f"{model}: aux_head_depth must be in [0, depth={depth}], got {aux_head_depth}")
    if aux_head_depth and not aux_head:
        raise ValueError(f"{model}: aux_head_depth = {aux_head_depth} needs aux_head=True (the blocks belong to the second head)")


def run_blocks(
    blocks: Iterable[nn.Module], h: torch.Tensor, first: int, decoupled_blocks: int, cond_early: torch.Tensor | None, cond: torch.Tensor | None
) -> torch.Tensor:
    """h <- block_i(h, cond_i) for i = first, first + 1, ...: cond_i = cond_early for i < decoupled_blocks, else cond."""
    for i, block in enumerate(blocks, start=first):
        h = block(h, cond_early if i < decoupled_blocks else cond)
    return h


def decoupled_conditions(
    embed: ConditionEmbeddings, t: torch.Tensor, s: torch.Tensor, y: torch.Tensor | None, c: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two condition stacks of a Decoupled MeanFlow network (Lee et al. 2025, arXiv 2510.24474):
    (embed(t, t, y, c), embed(s, s, y, c)), each (B, K, width).

    DMF turns a velocity model v(z, t) into a flow map F(z, t, s) without new parameters: the first
    blocks (the encoder) see the current time t, the last blocks and the output layer (the decoder)
    the target time s. Here each part sees the time inputs a velocity model gets at its time
    (T_GAP: (t, 0) and (s, 0); T_S: (t, t) and (s, s)), so a checkpoint trained as a velocity model
    (called with s = t) loads unchanged and F(z, t, t) is exactly its velocity.
    """
    return embed(t, t, y, c), embed(s, s, y, c)


class TimePairLogVariance(nn.Module):
    """A learned log-variance lv(t, s) = W [phi(t), phi(s)] + b of a time pair, zero at init.

    Decoupled MeanFlow (Lee et al. 2025, arXiv 2510.24474) uses one linear layer on the sinusoidal
    features of (t, r) to weight its per-sample loss (``flowcore.losses.adaptive_cauchy``).
    (B,), (B,) -> (B,).
    """

    def __init__(self, n_features: int = 128):
        super().__init__()
        self.n_features = n_features
        self.linear = zero_init(nn.Linear(2 * n_features, 1))

    def forward(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if t.dim() != 1 or t.shape != s.shape:
            raise ValueError(f"TimePairLogVariance: t and s must have the same shape (B,), got {tuple(t.shape)} and {tuple(s.shape)}")
        phi = torch.cat([sinusoidal_features(t, self.n_features), sinusoidal_features(s, self.n_features)], dim=-1)
        return self.linear(phi.to(self.linear.weight.dtype)).squeeze(-1)


class CompositeLayerNorm(nn.Module):
    """The layer norm of an ``nn.LayerNorm`` (same parameters, same state-dict keys), written with
    mean/variance ops: y = (x - mean) / sqrt(var + eps) * weight + bias.

    Needed where a loss backpropagates THROUGH a forward-mode tangent (TVM's dF/ds): torch's fused
    layer_norm computes its JVP from the saved mean and rstd without their autograd history, so the
    gradient of that JVP is silently wrong (measured in torch 2.13; pytorch/pytorch#196700 reports
    the same root cause for nested JVPs). Composite ops have exact forward-over-reverse derivatives.
    """

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        if not isinstance(norm, nn.LayerNorm):
            raise TypeError(f"CompositeLayerNorm wraps an nn.LayerNorm, got {type(norm).__name__}")
        self.normalized_shape, self.eps = tuple(norm.normalized_shape), norm.eps
        self.register_parameter("weight", norm.weight)
        self.register_parameter("bias", norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(self.normalized_shape), 0))
        centered = x - x.mean(dim=dims, keepdim=True)
        y = centered * torch.rsqrt(centered.pow(2).mean(dim=dims, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight
        return y if self.bias is None else y + self.bias


def composite_layer_norms(model: nn.Module) -> nn.Module:
    """Replace every ``nn.LayerNorm`` inside ``model`` by a ``CompositeLayerNorm``, in place (the
    weights are shared, checkpoints stay compatible); returns ``model``. Use it on a network whose
    loss differentiates through a JVP (``grad_through_tangent=True``)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(module, name, CompositeLayerNorm(child))
    return model
