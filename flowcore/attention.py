"""The one attention function every flowcore model calls.

    O = softmax(Q K^T * scale + mask) V,   Q, K, V of shape (B, H, N, D)

Stock CPU SDPA dispatches to a flash kernel that has no forward-mode derivative, so
``torch.func.jvp`` through it raises. ``attention`` therefore picks its back end:

- ``AttentionBackend.AUTO`` (default): torch's default SDPA, or SDPA restricted to the MATH backend
  when a forward-mode derivative is being taken (``torch.func.jvp`` or ``torch.autograd.forward_ad``).
- ``AttentionBackend.MATH``: always SDPA's MATH backend (materialises the N x N scores).
- ``AttentionBackend.FUSED``: flowcore's fused JVP-attention op (``flowcore.ops``), which computes
  O and its tangent in one tiled pass and backpropagates through both.

Select a back end for a block of code with ``with attention_backend(AttentionBackend.FUSED): ...``.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.autograd import forward_ad
from torch.nn.attention import SDPBackend, sdpa_kernel


class AttentionBackend(enum.Enum):
    AUTO = "auto"
    MATH = "math"
    FUSED = "fused"


_BACKEND: contextvars.ContextVar[AttentionBackend] = contextvars.ContextVar("flowcore_attention_backend", default=AttentionBackend.AUTO)


@contextlib.contextmanager
def attention_backend(backend: AttentionBackend) -> Iterator[None]:
    """Use ``backend`` for every ``flowcore.attention.attention`` call inside the block."""
    if not isinstance(backend, AttentionBackend):
        raise TypeError(f"backend must be an AttentionBackend, got {backend!r}")
    token = _BACKEND.set(backend)
    try:
        yield
    finally:
        _BACKEND.reset(token)


def current_backend() -> AttentionBackend:
    return _BACKEND.get()


def forward_derivative_active(*tensors: torch.Tensor) -> bool:
    """True when a forward-mode derivative flows through ``tensors``: inside ``torch.func.jvp``
    (functorch-wrapped tensors) or when a tensor is a ``forward_ad`` dual."""
    if torch._C._functorch.is_functorch_wrapped_tensor(tensors[0]):
        return True
    if forward_ad._current_level >= 0:
        return any(forward_ad.unpack_dual(x).tangent is not None for x in tensors)
    return False


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"attention: {name} must have shape (B, H, N, D), got {tuple(x.shape)}")
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention, differentiable in forward and reverse mode.

    ``key_padding_mask``: boolean (B, N_k), True where a key may be attended to.
    ``causal``: query i attends keys j <= i (top-left alignment, as SDPA's ``is_causal``).
    """
    _check_qkv(q, k, v)
    backend = _BACKEND.get()
    if backend is AttentionBackend.FUSED:
        from flowcore.ops import fused_attention

        return fused_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    if causal and mask is not None:  # SDPA takes one or the other: combine them into one boolean mask
        mask = mask & torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        causal = False
    enable_gqa = q.shape[1] != k.shape[1]
    if backend is AttentionBackend.MATH or forward_derivative_active(q, k, v):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=enable_gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=enable_gqa)
