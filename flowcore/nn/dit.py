"""A small Diffusion Transformer (DiT, Peebles & Xie 2023) for image flow models.

Patchify -> linear patch embedding + fixed 2D sin-cos positions -> transformer blocks -> final
layer -> unpatchify. Conditioning is either adaLN-zero (DiT) or in-context tokens (the condition
embeddings are prepended to the image tokens and dropped at the output, as in iMF's MiT).
Attention goes through ``flowcore.attention.attention`` with RMS-normalised q and k (QK-norm).
"""

from __future__ import annotations

import dataclasses
import enum

import torch
from torch import nn

from flowcore.attention import attention
from flowcore.nn.conditioning import (
    AdaptiveOutput, ConditionEmbeddings, TimeInputs, check_aux_head_depth, check_call, check_decoupled_blocks, decoupled_conditions, modulate,
    run_blocks, sinusoidal_features, zero_init,
)


class Conditioning(enum.Enum):
    """ADALN_ZERO: a conditioning vector modulates every norm (zero-init gates).
    IN_CONTEXT: each condition embedding is one extra token; plain pre-norm blocks."""

    ADALN_ZERO = "adaln_zero"
    IN_CONTEXT = "in_context"


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Images (B, channels, image_size, image_size) cut into (image_size/patch)^2 tokens of width
    ``width``; ``depth`` blocks of ``heads``-head attention and a 4x MLP. ``n_register_tokens``
    learned tokens are prepended (and dropped at the output). ``aux_head`` adds a second output (iMF's
    v-head): its own final layer (norm + modulation + linear) after its own copies of the last
    ``aux_head_depth`` blocks (iMF's MiT-B/2: 8 of 12; 0 = only the final layer is its own). ``decoupled_blocks`` = k > 0
    (adaLN only): blocks [0, k) are conditioned on t, blocks [k, depth) and the final layer on s
    (Decoupled MeanFlow, see ``conditioning.decoupled_conditions``); 0 = off."""

    image_size: int = 8
    channels: int = 1
    patch: int = 2
    width: int = 128
    depth: int = 4
    heads: int = 4
    num_classes: int = 0
    n_scalar_conds: int = 0
    time_inputs: TimeInputs = TimeInputs.T_GAP
    conditioning: Conditioning = Conditioning.ADALN_ZERO
    n_register_tokens: int = 0
    aux_head: bool = False
    aux_head_depth: int = 0
    decoupled_blocks: int = 0

    def __post_init__(self) -> None:
        for name in ("image_size", "channels", "patch", "width", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiTConfig: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_classes", "n_scalar_conds", "n_register_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"DiTConfig: {name} must be >= 0, got {getattr(self, name)}")
        if self.image_size % self.patch:
            raise ValueError(f"DiTConfig: image_size {self.image_size} must be divisible by patch {self.patch}")
        if self.width % self.heads:
            raise ValueError(f"DiTConfig: width {self.width} must be divisible by heads {self.heads}")
        if self.width % 4:
            raise ValueError(f"DiTConfig: width must be divisible by 4 (2D sin-cos positions), got {self.width}")
        if not isinstance(self.time_inputs, TimeInputs):
            raise TypeError(f"DiTConfig: time_inputs must be a TimeInputs, got {self.time_inputs!r}")
        if not isinstance(self.conditioning, Conditioning):
            raise TypeError(f"DiTConfig: conditioning must be a Conditioning, got {self.conditioning!r}")
        check_decoupled_blocks("DiTConfig", self.decoupled_blocks, self.depth, self.time_inputs)
        check_aux_head_depth("DiTConfig", self.aux_head, self.aux_head_depth, self.depth)
        if self.decoupled_blocks and self.conditioning is not Conditioning.ADALN_ZERO:
            raise ValueError("DiTConfig: decoupled_blocks > 0 needs adaLN-zero conditioning (in-context tokens are not per-block conditions)")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)(W/p), p*p*C); token r*(W/p)+q holds x[:, :, r*p:(r+1)*p, q*p:(q+1)*p]
    flattened in (row, column, channel) order."""
    b, ch, h, w = x.shape
    x = x.reshape(b, ch, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * ch)


def unpatchify(tokens: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Inverse of ``patchify``: (B, N, p*p*C) -> (B, C, H, W)."""
    b = tokens.shape[0]
    x = tokens.reshape(b, height // patch, width // patch, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, height, width)


def sincos_positions_2d(grid: int, width: int) -> torch.Tensor:
    """Fixed 2D positions (grid*grid, width): [phi(row), phi(col)], phi = ``sinusoidal_features``
    with width/2 features and unit scale, i.e. angles row * 10000^(-k / (width/4)) (as in DiT)."""
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    phi = [sinusoidal_features(x.reshape(-1), width // 2, scale=1.0, max_period=10000.0) for x in (rows, cols)]
    return torch.cat(phi, dim=-1).float()


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g over the last axis (learned gain g, init 1)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SelfAttention(nn.Module):
    """Multi-head self-attention with QK-norm: softmax(RMSNorm(q) RMSNorm(k)^T / sqrt(d)) v.

    Normalising q and k bounds the logits, which keeps the attention JVP well conditioned.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = RMSNorm(width // heads)
        self.k_norm = RMSNorm(width // heads)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(o.transpose(1, 2).reshape(b, n, w))


class DiTBlock(nn.Module):
    """Pre-norm transformer block. With adaLN (``adaptive``): norms without affine, and
    x <- x + g1 * attn(modulate(LN x, b1, a1)); x <- x + g2 * mlp(modulate(LN x, b2, a2)), with
    (b1, a1, g1, b2, a2, g2) = W_m cond zero at init. Without: x <- x + attn(LN x); x <- x + mlp(LN x)."""

    def __init__(self, width: int, heads: int, adaptive: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=not adaptive, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=not adaptive, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.modulation = zero_init(nn.Linear(width, 6 * width)) if adaptive else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.modulation is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, None, :].chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class ContextOutput(nn.Module):
    """Final layer of the in-context DiT: out = W_o LN(h) + b_o, W_o and b_o zero at init."""

    def __init__(self, width: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.linear = zero_init(nn.Linear(width, out_features))

    def forward(self, h: torch.Tensor, cond: None) -> torch.Tensor:
        return self.linear(self.norm(h))


def output_layer(config: DiTConfig) -> AdaptiveOutput | ContextOutput:
    patch_features = config.patch * config.patch * config.channels
    if config.conditioning is Conditioning.ADALN_ZERO:
        return AdaptiveOutput(config.width, config.width, patch_features)
    return ContextOutput(config.width, patch_features)


class DiT(nn.Module):
    """F(z, t, s, y, c) for images z (B, channels, image_size, image_size); output of z's shape.

    Tokens = [condition tokens (in-context only), register tokens, image tokens]; only the image
    tokens reach the output layer. With adaLN-zero, cond = SiLU(sum of condition embeddings) drives
    every block and the final layer. Zero output at init. With ``aux_head`` returns (out, aux_out).
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        if not isinstance(config, DiTConfig):
            raise TypeError(f"DiT: config must be a DiTConfig, got {type(config).__name__}")
        self.config = config
        width, adaptive = config.width, config.conditioning is Conditioning.ADALN_ZERO
        self.embed = ConditionEmbeddings(width, config.time_inputs, config.num_classes, config.n_scalar_conds)
        self.patch_embed = nn.Linear(config.patch * config.patch * config.channels, width)
        self.register_buffer("positions", sincos_positions_2d(config.grid, width)[None], persistent=False)
        self.registers = nn.Parameter(0.02 * torch.randn(1, config.n_register_tokens, width)) if config.n_register_tokens else None
        self.blocks = nn.ModuleList(DiTBlock(width, config.heads, adaptive) for _ in range(config.depth))
        self.head = output_layer(config)
        self.aux = output_layer(config) if config.aux_head else None
        self.aux_blocks = nn.ModuleList(DiTBlock(width, config.heads, adaptive) for _ in range(config.aux_head_depth))

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, y: torch.Tensor | None = None, c: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        check_call("DiT", z, t, s, y, c, num_classes=cfg.num_classes, n_scalar_conds=cfg.n_scalar_conds)
        expected = (cfg.channels, cfg.image_size, cfg.image_size)
        if z.dim() != 4 or tuple(z.shape[1:]) != expected:
            raise ValueError(f"DiT: z must have shape (B, {', '.join(map(str, expected))}), got {tuple(z.shape)}")
        k = cfg.decoupled_blocks
        conditions = self.embed(t, s, y, c) if k == 0 else None
        x = self.patch_embed(patchify(z, cfg.patch)) + self.positions
        prefix = [] if self.registers is None else [self.registers.expand(z.shape[0], -1, -1)]
        if cfg.conditioning is Conditioning.IN_CONTEXT:
            prefix.insert(0, conditions)
            cond = cond_early = None
        elif k:
            cond_early, cond = (nn.functional.silu(e.sum(dim=1)) for e in decoupled_conditions(self.embed, t, s, y, c))
        else:
            cond = cond_early = nn.functional.silu(conditions.sum(dim=1))
        x = torch.cat([*prefix, x], dim=1) if prefix else x
        shared = cfg.depth - cfg.aux_head_depth
        x_aux = run_blocks(self.blocks[:shared], x, 0, k, cond_early, cond)
        x = run_blocks(self.blocks[shared:], x_aux, shared, k, cond_early, cond)
        out = self.image(self.head(self.image_tokens(x), cond))
        if self.aux is None:
            return out
        x_aux = run_blocks(self.aux_blocks, x_aux, shared, k, cond_early, cond)
        return out, self.image(self.aux(self.image_tokens(x_aux), cond))

    def image_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The last grid^2 tokens: the image's, without the condition and register tokens before them."""
        return x[:, x.shape[1] - self.config.grid ** 2 :]

    def image(self, tokens: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return unpatchify(tokens, cfg.patch, cfg.channels, cfg.image_size, cfg.image_size)
