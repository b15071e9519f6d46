"""Residual MLP with adaLN-zero modulation, for 2D toys and flattened 8x8 digits."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from flowcore.nn.conditioning import (
    AdaptiveOutput, ConditionEmbeddings, TimeInputs, check_aux_head_depth, check_call, check_decoupled_blocks, decoupled_conditions, modulate,
    run_blocks, zero_init,
)


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """dim: flattened data dimension (2 for 2D toys, 64 for 8x8 digits); width, depth: residual
    blocks; cond_width: width of the condition embeddings and of the conditioning vector that
    modulates every block (kept below ``width``: the per-sample modulation matmul cond_width x
    3 width would otherwise cost more than the block itself); num_classes > 0 makes the model
    class-conditional (plus a null class); n_scalar_conds: columns of c; aux_head: also return a
    second output (iMF's v-head); aux_head_depth: the last aux_head_depth blocks are duplicated for it, so the
    two heads share only the first depth - aux_head_depth blocks (iMF's MiT-B/2: 8 of 12), 0 = they share
    every block and differ in their output layers alone; decoupled_blocks: k > 0 conditions blocks
    [0, k) on t and blocks [k, depth) plus the output layer on s (Decoupled MeanFlow, see
    ``conditioning.decoupled_conditions``), 0 = off; fourier_features n > 0 feeds the input layer
    [z, sin(2 pi z B), cos(2 pi z B)] with a fixed B (dim, n) ~ N(0, fourier_scale^2) (``FourierInput``);
    conds_in_input also feeds the scalar conditions c to the input layer, beside z (Meta Flow Maps: a
    conditioning state z_c that the output depends on as sharply as on z enters the trunk as z does,
    not only through the adaLN modulation)."""

    dim: int
    width: int = 512
    depth: int = 4
    cond_width: int = 128
    num_classes: int = 0
    n_scalar_conds: int = 0
    time_inputs: TimeInputs = TimeInputs.T_GAP
    aux_head: bool = False
    aux_head_depth: int = 0
    decoupled_blocks: int = 0
    fourier_features: int = 0
    fourier_scale: float = 1.0
    conds_in_input: bool = False

    def __post_init__(self) -> None:
        for name in ("dim", "width", "depth", "cond_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"MLPConfig: {name} must be >= 1, got {getattr(self, name)}")
        if not self.fourier_scale > 0:
            raise ValueError(f"MLPConfig: fourier_scale must be > 0, got {self.fourier_scale}")
        for name in ("num_classes", "n_scalar_conds", "fourier_features"):
            if getattr(self, name) < 0:
                raise ValueError(f"MLPConfig: {name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.time_inputs, TimeInputs):
            raise TypeError(f"MLPConfig: time_inputs must be a TimeInputs, got {self.time_inputs!r}")
        check_decoupled_blocks("MLPConfig", self.decoupled_blocks, self.depth, self.time_inputs)
        check_aux_head_depth("MLPConfig", self.aux_head, self.aux_head_depth, self.depth)
        if self.conds_in_input and self.n_scalar_conds == 0:
            raise ValueError("MLPConfig: conds_in_input needs scalar conditions (n_scalar_conds > 0)")


class FourierInput(nn.Module):
    """Random Fourier features of the input (Tancik et al. 2020, arXiv 2006.10739):

        gamma(z) = [z, sin(2 pi z B), cos(2 pi z B)],   B (dim, n) ~ N(0, scale^2), fixed (a saved buffer).

    A linear layer on gamma(z) can turn sharply where one on z cannot, which low-dimensional maps with
    near-discontinuities need (a one-step map from a Gaussian onto a checkerboard's separate squares).
    Smooth in z, so JVPs and finite differences in z pass through it."""

    def __init__(self, dim: int, n: int, scale: float):
        super().__init__()
        self.register_buffer("frequencies", scale * torch.randn(dim, n))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * z @ self.frequencies
        return torch.cat([z, torch.sin(phase), torch.cos(phase)], dim=-1)


class ResidualBlock(nn.Module):
    """h <- h + gate * W2 SiLU(W1 modulate(LN(h), shift, scale)), (shift, scale, gate) = W_m cond.

    W_m is zero at init (adaLN-zero, DiT), so every block starts as the identity.
    """

    def __init__(self, width: int, cond_width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.modulation = zero_init(nn.Linear(cond_width, 3 * width))

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(cond).chunk(3, dim=-1)
        return h + gate * self.fc2(nn.functional.silu(self.fc1(modulate(self.norm(h), shift, scale))))


class MLP(nn.Module):
    """F(z, t, s, y, c): z (B, ...) with prod(...) = dim is flattened, mapped and reshaped back.

    cond = SiLU(sum of the embeddings of the time inputs, class label and scalar conditions);
    h = W_in z; h <- block(h, cond) x depth; out = AdaptiveOutput(h, cond) (zero at init).
    With ``aux_head`` the call returns (out, aux_out), two zero-init output layers; the aux output runs
    its own copies of the last ``aux_head_depth`` blocks after the shared ones.
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        if not isinstance(config, MLPConfig):
            raise TypeError(f"MLP: config must be an MLPConfig, got {type(config).__name__}")
        self.config = config
        width, cond_width = config.width, config.cond_width
        self.embed = ConditionEmbeddings(cond_width, config.time_inputs, config.num_classes, config.n_scalar_conds)
        self.features = FourierInput(config.dim, config.fourier_features, config.fourier_scale) if config.fourier_features else None
        self.input = nn.Linear(config.dim + 2 * config.fourier_features + (config.n_scalar_conds if config.conds_in_input else 0), width)
        self.blocks = nn.ModuleList(ResidualBlock(width, cond_width) for _ in range(config.depth))
        self.head = AdaptiveOutput(width, cond_width, config.dim)
        self.aux = AdaptiveOutput(width, cond_width, config.dim) if config.aux_head else None
        self.aux_blocks = nn.ModuleList(ResidualBlock(width, cond_width) for _ in range(config.aux_head_depth))

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, y: torch.Tensor | None = None, c: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        check_call("MLP", z, t, s, y, c, num_classes=cfg.num_classes, n_scalar_conds=cfg.n_scalar_conds)
        if z.dim() < 2 or math.prod(z.shape[1:]) != cfg.dim:
            raise ValueError(f"MLP: z must have shape (B, ...) with {cfg.dim} values per sample, got {tuple(z.shape)}")
        k = cfg.decoupled_blocks
        if k == 0:
            cond = cond_early = nn.functional.silu(self.embed(t, s, y, c).sum(dim=1))
        else:
            cond_early, cond = (nn.functional.silu(e.sum(dim=1)) for e in decoupled_conditions(self.embed, t, s, y, c))
        flat = z.reshape(z.shape[0], cfg.dim)
        inputs = flat if self.features is None else self.features(flat)
        if cfg.conds_in_input:
            inputs = torch.cat([inputs, c.to(inputs.dtype)], dim=1)
        h = self.input(inputs)
        shared = cfg.depth - cfg.aux_head_depth
        h_aux = run_blocks(self.blocks[:shared], h, 0, k, cond_early, cond)
        h = run_blocks(self.blocks[shared:], h_aux, shared, k, cond_early, cond)
        out = self.head(h, cond).reshape(z.shape)
        if self.aux is None:
            return out
        h_aux = run_blocks(self.aux_blocks, h_aux, shared, k, cond_early, cond)
        return out, self.aux(h_aux, cond).reshape(z.shape)
