"""Registers the ``flowcore::attn_*`` operators: kernels, fake (meta) kernels and autograd formulas.

Schemas (defined in C++ by ``csrc/jvp_attention_ops.cpp``, or here when the extension is missing):

    attn_fwd(q, k, v, key_padding_mask?, causal, scale) -> (out, lse)
    attn_fwd_jvp(q, k, v, tq, tk, tv, key_padding_mask?, causal, scale) -> (out, tout, lse, mu)
    attn_bwd(grad_out, q, k, v, out, lse, key_padding_mask?, causal, scale) -> (dq, dk, dv)
    attn_jvp_bwd(grad_out, grad_tout, q, k, v, tq, tk, tv, out, tout, lse, mu, key_padding_mask?,
                 causal, scale) -> (dq, dk, dv, dtq, dtk, dtv)

``attn_fwd_jvp``'s autograd backward takes the fast path ``attn_bwd`` (5 GEMMs per tile instead of 15)
when no gradient reaches ``tout`` (MeanFlow/sCM targets, detached tangents). Under ``create_graph=True`` the
backward is computed by the differentiable blockwise PyTorch code, which makes the op twice
differentiable. A custom op has no forward-mode rule; forward mode is provided by the
``unpack_dual``/``make_dual`` wrapper in ``flowcore.ops.attention``.
"""

from __future__ import annotations

import torch

from flowcore.ops import _blockwise

SCHEMAS = {
    "attn_fwd": "(Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, bool causal, float scale) -> (Tensor out, Tensor lse)",
    "attn_fwd_jvp": "(Tensor q, Tensor k, Tensor v, Tensor tq, Tensor tk, Tensor tv, Tensor? key_padding_mask, "
    "bool causal, float scale) -> (Tensor out, Tensor tout, Tensor lse, Tensor mu)",
    "attn_bwd": "(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? key_padding_mask, "
    "bool causal, float scale) -> (Tensor dq, Tensor dk, Tensor dv)",
    "attn_jvp_bwd": "(Tensor grad_out, Tensor grad_tout, Tensor q, Tensor k, Tensor v, Tensor tq, Tensor tk, "
    "Tensor tv, Tensor out, Tensor tout, Tensor lse, Tensor mu, Tensor? key_padding_mask, bool causal, "
    "float scale) -> (Tensor dq, Tensor dk, Tensor dv, Tensor dtq, Tensor dtk, Tensor dtv)",
}


def _load_extension() -> bool:
    try:
        import flowcore._C  # noqa: F401  (registers the ops with the dispatcher)
    except ImportError:
        return False
    return True


EXTENSION_AVAILABLE = _load_extension()


def _define_fallback_ops() -> torch.library.Library:
    """Defines the ops with the blockwise PyTorch recurrence as kernel for every device."""
    lib = torch.library.Library("flowcore", "DEF")
    for name, schema in SCHEMAS.items():
        lib.define(name + schema)

    @torch.no_grad()
    def fwd(q, k, v, mask, causal, scale):
        out, _, lse, _ = _blockwise.attn_fwd_jvp(q, k, v, None, None, None, mask, causal, scale)
        return out, lse

    @torch.no_grad()
    def fwd_jvp(q, k, v, tq, tk, tv, mask, causal, scale):
        return _blockwise.attn_fwd_jvp(q, k, v, tq, tk, tv, mask, causal, scale)

    @torch.no_grad()
    def bwd(grad_out, q, k, v, out, lse, mask, causal, scale):
        return _blockwise.attn_jvp_bwd(grad_out, None, q, k, v, None, None, None, out, None, lse, None, mask, causal, scale)[:3]

    @torch.no_grad()
    def jvp_bwd(*args):
        return _blockwise.attn_jvp_bwd(*args)

    for name, fn in (("attn_fwd", fwd), ("attn_fwd_jvp", fwd_jvp), ("attn_bwd", bwd), ("attn_jvp_bwd", jvp_bwd)):
        lib.impl(name, fn, "CompositeExplicitAutograd")
    return lib


_FALLBACK_LIBRARY = None if EXTENSION_AVAILABLE else _define_fallback_ops()


def _stat_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _out_shape(q: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int]:
    return (q.shape[0], q.shape[1], q.shape[2], v.shape[3])


@torch.library.register_fake("flowcore::attn_fwd")
def _attn_fwd_fake(q, k, v, key_padding_mask, causal, scale):
    return q.new_empty(_out_shape(q, v)), q.new_empty(q.shape[:3], dtype=_stat_dtype(q))


@torch.library.register_fake("flowcore::attn_fwd_jvp")
def _attn_fwd_jvp_fake(q, k, v, tq, tk, tv, key_padding_mask, causal, scale):
    stats = q.shape[:3]
    return (q.new_empty(_out_shape(q, v)), q.new_empty(_out_shape(q, v)),
            q.new_empty(stats, dtype=_stat_dtype(q)), q.new_empty(stats, dtype=_stat_dtype(q)))


@torch.library.register_fake("flowcore::attn_bwd")
def _attn_bwd_fake(grad_out, q, k, v, out, lse, key_padding_mask, causal, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


@torch.library.register_fake("flowcore::attn_jvp_bwd")
def _attn_jvp_bwd_fake(grad_out, grad_tout, q, k, v, tq, tk, tv, out, tout, lse, mu, key_padding_mask, causal, scale):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))


def _differentiable_backward(grad_out, grad_tout, q, k, v, tq, tk, tv, mask, causal, scale):
    """Backward built from differentiable torch ops (for create_graph=True / double backward). O, Odot, LSE
    and mu are recomputed from the inputs so that their dependence on the inputs is part of the graph."""
    out, tout, lse, mu = _blockwise.attn_fwd_jvp(q, k, v, tq, tk, tv, mask, causal, scale)
    return _blockwise.attn_jvp_bwd(grad_out, grad_tout, q, k, v, tq, tk, tv, out, tout, lse, mu, mask, causal, scale)


def _setup_attn_fwd(ctx, inputs, output):
    q, k, v, mask, causal, scale = inputs
    out, lse = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, mask)
    ctx.causal, ctx.scale = causal, scale


def _attn_fwd_backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, mask = ctx.saved_tensors
    if grad_out is None:
        return None, None, None, None, None, None
    if torch.is_grad_enabled():  # create_graph
        dq, dk, dv, *_ = _differentiable_backward(grad_out, None, q, k, v, None, None, None, mask, ctx.causal, ctx.scale)
    else:
        dq, dk, dv = torch.ops.flowcore.attn_bwd(grad_out.contiguous(), q, k, v, out, lse, mask, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None, None


def _setup_attn_fwd_jvp(ctx, inputs, output):
    q, k, v, tq, tk, tv, mask, causal, scale = inputs
    out, tout, lse, mu = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(lse, mu)
    ctx.save_for_backward(q, k, v, tq, tk, tv, out, tout, lse, mu, mask)
    ctx.causal, ctx.scale = causal, scale


def _attn_fwd_jvp_backward(ctx, grad_out, grad_tout, _grad_lse, _grad_mu):
    q, k, v, tq, tk, tv, out, tout, lse, mu, mask = ctx.saved_tensors
    none = (None,) * 3
    if grad_out is None and grad_tout is None:
        return (None,) * 9
    if grad_tout is None:  # tangent unused or stop-gradded: plain flash backward, tangent grads are 0
        if torch.is_grad_enabled():  # create_graph
            grads = _differentiable_backward(grad_out, None, q, k, v, None, None, None, mask, ctx.causal, ctx.scale)[:3]
        else:
            grads = torch.ops.flowcore.attn_bwd(grad_out.contiguous(), q, k, v, out, lse, mask, ctx.causal, ctx.scale)
        return (*grads, *none, *none)
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
    grad_tout = torch.zeros_like(tout) if grad_tout is None else grad_tout.contiguous()
    if torch.is_grad_enabled():  # create_graph
        grads = _differentiable_backward(grad_out, grad_tout, q, k, v, tq, tk, tv, mask, ctx.causal, ctx.scale)
    else:
        grads = torch.ops.flowcore.attn_jvp_bwd(grad_out, grad_tout, q, k, v, tq, tk, tv, out, tout, lse, mu, mask,
                                                ctx.causal, ctx.scale)
    return (*grads, *none)


torch.library.register_autograd("flowcore::attn_fwd", _attn_fwd_backward, setup_context=_setup_attn_fwd)
torch.library.register_autograd("flowcore::attn_fwd_jvp", _attn_fwd_jvp_backward, setup_context=_setup_attn_fwd_jvp)
