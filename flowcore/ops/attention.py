"""Fused attention with its forward-mode derivative (JVP) and backward through both.

    O = softmax(c Q K^T + mask) V
    Odot = dO[Qdot, Kdot, Vdot] = (P o Sdot) V - mu O + P Vdot,  Sdot = c (Qdot K^T + Q Kdot^T),  mu = rowsum(P o Sdot)

computed in one tiled pass (online softmax, O(N) memory) by the ``flowcore::attn_*`` operators, with a
backward through O and Odot to all six inputs (TVM-style training needs the gradient through the
tangent; MeanFlow/sCM, which detach it, get the plain flash backward).

Conventions of every function here:
- q (B, H, N_q, D), k (B, H_kv, N_k, D), v (B, H_kv, N_k, D_v); H_kv divides H (grouped-query heads).
- ``key_padding_mask``: boolean (B, N_k), True = the key may be attended to.
- ``causal``: top-left aligned, as ``scaled_dot_product_attention(is_causal=True)``: query i attends
  keys j <= i, also when N_q != N_k (queries past N_k see every key; with N_q < N_k the last keys are
  never attended).
- A query that sees no key (fully masked row) gets O = Odot = 0, never NaN.
- ``scale``: softmax scale c, default 1 / sqrt(D).
"""

from __future__ import annotations

import math

import torch
from torch.autograd import forward_ad as fwAD

from flowcore.ops import _registration

_SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def extension_available() -> bool:
    """True when the compiled C++ (and, if built, CUDA) kernels are loaded; False means the blockwise
    PyTorch fallback runs the same recurrence."""
    return _registration.EXTENSION_AVAILABLE


def _kernel_devices() -> frozenset[str] | None:
    """Device types with a compiled kernel; None when the fallback (any device) is used."""
    if not _registration.EXTENSION_AVAILABLE:
        return None
    import flowcore._C as ext

    return frozenset({"cpu", "cuda"} if ext.with_cuda else {"cpu"})


def _check_inputs(q, k, v, key_padding_mask, scale) -> float:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"fused_attention: {name} must be a tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"fused_attention: {name} must have shape (B, H, N, D), got {tuple(x.shape)}")
        if x.dtype != q.dtype:
            raise TypeError(f"fused_attention: {name} has dtype {x.dtype}, q has {q.dtype}")
        if x.device != q.device:
            raise ValueError(f"fused_attention: {name} is on {x.device}, q on {q.device}")
    if q.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"fused_attention: q must be float32, float64, bfloat16 or float16, got {q.dtype}")
    devices = _kernel_devices()
    if devices is not None and q.device.type not in devices and q.device.type != "meta":
        raise ValueError(f"fused_attention: no compiled kernel for device {q.device} (built for {sorted(devices)})")
    b, h, _, d = q.shape
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(f"fused_attention: batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[1] != v.shape[1] or k.shape[1] == 0 or h % k.shape[1] != 0:
        raise ValueError(f"fused_attention: k and v need H_kv heads dividing H: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"fused_attention: k and v must have the same length: k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[3] != d or d == 0 or v.shape[3] == 0:
        raise ValueError(f"fused_attention: q and k need the same non-empty head dim: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError("fused_attention: key_padding_mask must be a bool tensor (True = attend)")
        if tuple(key_padding_mask.shape) != (b, k.shape[2]):
            raise ValueError(f"fused_attention: key_padding_mask must have shape (B, N_k) = {(b, k.shape[2])}, got {tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"fused_attention: key_padding_mask is on {key_padding_mask.device}, q on {q.device}")
    if scale is None:
        return 1.0 / math.sqrt(d)
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"fused_attention: scale must be finite, got {scale}")
    return scale


def _check_tangent(name: str, tangent: torch.Tensor, primal: torch.Tensor) -> None:
    if tangent.shape != primal.shape or tangent.dtype != primal.dtype or tangent.device != primal.device:
        raise ValueError(f"attention_jvp: {name} must match its primal ({tuple(primal.shape)}, {primal.dtype}, "
                         f"{primal.device}), got ({tuple(tangent.shape)}, {tangent.dtype}, {tangent.device})")


def _jvp_op(q, k, v, tq, tk, tv, key_padding_mask, causal: bool, scale: float):
    """Runs flowcore::attn_fwd_jvp on contiguous primals and tangents (None tangent = zero)."""
    tq, tk, tv = (torch.zeros_like(p) if t is None else t for p, t in ((q, tq), (k, tk), (v, tv)))
    mask = None if key_padding_mask is None else key_padding_mask.contiguous()
    out, tout, _, _ = torch.ops.flowcore.attn_fwd_jvp(
        q.contiguous(), k.contiguous(), v.contiguous(), tq.contiguous(), tk.contiguous(), tv.contiguous(),
        mask, causal, scale)
    return out, tout


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """O = softmax(scale Q K^T, masked) V, differentiable in forward mode and reverse mode.

    When q, k or v carry a forward-mode tangent (inside ``torch.func.jvp`` or as a
    ``torch.autograd.forward_ad`` dual), the tangent of O is computed by the fused kernel in the same
    pass and attached with ``make_dual``; reverse mode then flows through O and its tangent. Works
    under ``torch.compile(fullgraph=True)``. See the module docstring for shapes, masks and causality.
    """
    scale = _check_inputs(q, k, v, key_padding_mask, scale)
    (qp, tq), (kp, tk), (vp, tv) = (fwAD.unpack_dual(x) for x in (q, k, v))
    if tq is None and tk is None and tv is None:
        mask = None if key_padding_mask is None else key_padding_mask.contiguous()
        out, _ = torch.ops.flowcore.attn_fwd(qp.contiguous(), kp.contiguous(), vp.contiguous(), mask, causal, scale)
        return out
    out, tout = _jvp_op(qp, kp, vp, tq, tk, tv, key_padding_mask, causal, scale)
    return fwAD.make_dual(out, tout)


def attention_jvp(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tq: torch.Tensor | None,
    tk: torch.Tensor | None,
    tv: torch.Tensor | None,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, Odot) for explicitly propagated tangents (tq, tk, tv; None = zero), without ``torch.func``.

    Odot = (P o Sdot) V - mu O + P Vdot with Sdot = scale (tq K^T + Q tk^T) and mu = rowsum(P o Sdot).
    Both outputs are differentiable w.r.t. all six inputs.
    """
    scale = _check_inputs(q, k, v, key_padding_mask, scale)
    for name, t, p in (("tq", tq, q), ("tk", tk, k), ("tv", tv, v)):
        if t is not None:
            _check_tangent(name, t, p)
    return _jvp_op(q, k, v, tq, tk, tv, key_padding_mask, causal, scale)
