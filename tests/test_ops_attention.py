"""Fused JVP attention (flowcore.ops) against SDPA(MATH) under torch.func.jvp, finite differences,
gradcheck/gradgradcheck, opcheck, and torch.compile."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad as fwAD
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from flowcore.ops import _blockwise, attention_jvp, extension_available, fused_attention


def sdpa_math(q, k, v, causal=False, mask=None, scale=None):
    """Reference: SDPA restricted to the MATH backend; causal top-left and padding mask as one bool mask."""
    attn_mask = None
    if causal or mask is not None:
        lq, lk = q.shape[2], k.shape[2]
        attn_mask = torch.ones(q.shape[0], 1, lq, lk, dtype=torch.bool)
        if causal:
            attn_mask = attn_mask & torch.ones(lq, lk, dtype=torch.bool).tril()
        if mask is not None:
            attn_mask = attn_mask & mask[:, None, None, :]
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def make_inputs(b, h, hkv, lq, lk, d, dv, dtype=torch.float64, amplitude=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(b, h, lq, d), (b, hkv, lk, d), (b, hkv, lk, dv)]
    primals = [amplitude * torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    tangents = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    return primals, tangents


def jvp_and_grads(fn, primals, tangents, weights):
    """(O, Odot, grads of <w1, O> + <w2, Odot> w.r.t. the 6 inputs, grads of <w1, O> w.r.t. q, k, v)."""
    xs = [x.detach().clone().requires_grad_() for x in (*primals, *tangents)]
    out, tout = torch.func.jvp(fn, tuple(xs[:3]), tuple(xs[3:]))
    w1, w2 = weights
    both = torch.autograd.grad((out * w1).sum() + (tout * w2).sum(), xs, retain_graph=True)
    primal_only = torch.autograd.grad((out * w1).sum(), xs[:3])
    return out.detach(), tout.detach(), both, primal_only


GRID = [
    # b, h, hkv, lq, lk, d, dv, causal, masked, amplitude
    (1, 1, 1, 1, 1, 8, 8, False, False, 1.0),
    (1, 2, 2, 1, 5, 8, 8, True, False, 1.0),
    (2, 2, 2, 67, 67, 32, 32, True, False, 1.0),
    (2, 4, 2, 37, 300, 16, 24, False, True, 1.0),
    (1, 4, 1, 130, 45, 64, 64, True, True, 1.0),
    (1, 2, 2, 300, 290, 8, 8, False, False, 8.0),
    (1, 2, 2, 70, 70, 128, 128, True, False, 1.0),
    (2, 6, 3, 19, 23, 32, 16, True, True, 6.0),
]


@pytest.mark.parametrize("b,h,hkv,lq,lk,d,dv,causal,masked,amplitude", GRID)
def test_matches_sdpa_math_jvp_and_gradients_fp64(b, h, hkv, lq, lk, d, dv, causal, masked, amplitude):
    primals, tangents = make_inputs(b, h, hkv, lq, lk, d, dv, amplitude=amplitude)
    mask = None
    if masked:
        mask = torch.rand(b, lk, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[:, 0] = True  # keep every row non-empty here; empty rows have their own test
    g = torch.Generator().manual_seed(2)
    weights = [torch.randn(b, h, lq, dv, generator=g, dtype=torch.float64) for _ in range(2)]
    got = jvp_and_grads(lambda q, k, v: fused_attention(q, k, v, causal=causal, key_padding_mask=mask), primals, tangents, weights)
    ref = jvp_and_grads(lambda q, k, v: sdpa_math(q, k, v, causal, mask), primals, tangents, weights)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-9, atol=1e-10 * amplitude)
    for a, r in zip(got[2], ref[2]):
        torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-9 * amplitude**2)
    for a, r in zip(got[3], ref[3]):
        torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-9 * amplitude**2)


def test_matches_sdpa_math_fp32_across_tiles():
    primals, tangents = make_inputs(1, 4, 2, 200, 600, 64, 64, dtype=torch.float32, amplitude=2.0)
    weights = [torch.randn(1, 4, 200, 64) for _ in range(2)]
    ref64 = jvp_and_grads(lambda q, k, v: sdpa_math(q, k, v, True), [x.double() for x in primals],
                          [x.double() for x in tangents], [w.double() for w in weights])
    got = jvp_and_grads(lambda q, k, v: fused_attention(q, k, v, causal=True), primals, tangents, weights)
    for a, r in zip([got[0], got[1], *got[2]], [ref64[0], ref64[1], *ref64[2]]):
        err = (a.double() - r).abs().max() / r.abs().max()
        assert err < 2e-5, err


def test_bfloat16_close_to_fp64_reference():
    primals, tangents = make_inputs(1, 2, 2, 50, 50, 32, 32, dtype=torch.bfloat16)
    out, tout = attention_jvp(*primals, *tangents, causal=True)
    assert out.dtype == tout.dtype == torch.bfloat16
    ref = torch.func.jvp(lambda q, k, v: sdpa_math(q, k, v, True), tuple(x.double() for x in primals), tuple(x.double() for x in tangents))
    for a, r in zip((out, tout), ref):
        assert (a.double() - r).abs().max() / r.abs().max() < 3e-2


def test_fully_masked_rows_give_zero_outputs_and_finite_gradients():
    primals, tangents = make_inputs(2, 2, 1, 9, 12, 8, 8)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1] = False  # batch 1 sees no key at all
    xs = [x.clone().requires_grad_() for x in (*primals, *tangents)]
    out, tout = attention_jvp(*xs, key_padding_mask=mask)
    assert torch.all(out[1] == 0) and torch.all(tout[1] == 0)
    assert torch.isfinite(out).all() and torch.isfinite(tout).all()
    grads = torch.autograd.grad(out.sum() + tout.square().sum(), xs)
    for gr in grads:
        assert torch.isfinite(gr).all()
        assert torch.all(gr[1] == 0)
    ref = torch.func.jvp(lambda q, k, v: sdpa_math(q, k, v, mask=mask[:1]), tuple(x[:1] for x in primals), tuple(x[:1] for x in tangents))
    torch.testing.assert_close(out[:1].detach(), ref[0])
    torch.testing.assert_close(tout[:1].detach(), ref[1])


def test_causal_is_top_left_aligned_for_rectangular_shapes():
    """Query i sees keys j <= i: with N_q < N_k the last keys get no attention (no gradient)."""
    primals, tangents = make_inputs(1, 1, 1, 4, 10, 8, 8)
    v = primals[2].clone().requires_grad_()
    out = fused_attention(primals[0], primals[1], v, causal=True)
    (dv,) = torch.autograd.grad(out.sum(), v)
    assert torch.all(dv[..., 4:, :] == 0) and torch.all(dv[..., :4, :] != 0)
    torch.testing.assert_close(out[..., 0, :], primals[2][..., 0, :])  # row 0 sees key 0 only


def test_forward_ad_dual_api_matches_torch_func_jvp():
    primals, tangents = make_inputs(2, 4, 2, 33, 40, 16, 16)
    mask = torch.rand(2, 40, generator=torch.Generator().manual_seed(3)) > 0.2
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents)]
        out, tout = fwAD.unpack_dual(fused_attention(*duals, causal=True, key_padding_mask=mask))
    ref = torch.func.jvp(lambda q, k, v: sdpa_math(q, k, v, True, mask), tuple(primals), tuple(tangents))
    torch.testing.assert_close(out, ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tout, ref[1], rtol=1e-10, atol=1e-12)


def test_forward_ad_backward_through_tangent():
    """forward_ad dual API (where SDPA math itself fails, pytorch#162350) with loss on the tangent."""
    primals, tangents = make_inputs(1, 2, 2, 20, 20, 8, 8)
    q = primals[0].clone().requires_grad_()
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip([q, *primals[1:]], tangents)]
        _, tout = fwAD.unpack_dual(fused_attention(*duals))
        (dq,) = torch.autograd.grad(tout.square().sum(), q)
    ref_q = primals[0].clone().requires_grad_()
    _, rt = torch.func.jvp(lambda q_: sdpa_math(q_, primals[1], primals[2]), (ref_q,), (tangents[0],))
    rt = torch.func.jvp(lambda q_, k_, v_: sdpa_math(q_, k_, v_), (ref_q, primals[1], primals[2]), tuple(tangents))[1]
    (rdq,) = torch.autograd.grad(rt.square().sum(), ref_q)
    torch.testing.assert_close(dq, rdq, rtol=1e-9, atol=1e-11)


def test_tangent_equals_central_finite_difference():
    primals, tangents = make_inputs(1, 2, 2, 17, 23, 8, 8)
    _, tout = attention_jvp(*primals, *tangents, causal=True)
    eps = 1e-4
    plus = fused_attention(*[p + eps * t for p, t in zip(primals, tangents)], causal=True)
    minus = fused_attention(*[p - eps * t for p, t in zip(primals, tangents)], causal=True)
    fd = (plus - minus) / (2 * eps)
    assert (fd - tout).abs().max() / tout.abs().max() < 1e-7


def test_attention_jvp_none_tangent_is_zero_tangent():
    primals, tangents = make_inputs(1, 2, 1, 10, 12, 8, 4)
    a = attention_jvp(*primals, tangents[0], None, None)
    b = attention_jvp(*primals, tangents[0], torch.zeros_like(primals[1]), torch.zeros_like(primals[2]))
    torch.testing.assert_close(a, b)


def test_gradcheck_and_gradgradcheck_fp64():
    primals, tangents = make_inputs(1, 2, 1, 5, 7, 4, 3)
    mask = torch.tensor([[True, True, False, True, True, False, True]])
    xs = tuple(x.clone().requires_grad_() for x in (*primals, *tangents))

    def op_pair(*args):
        return attention_jvp(*args, causal=True, key_padding_mask=mask)

    assert torch.autograd.gradcheck(op_pair, xs)
    assert torch.autograd.gradgradcheck(op_pair, xs)

    def plain(q, k, v):
        return fused_attention(q, k, v, key_padding_mask=mask)

    assert torch.autograd.gradcheck(plain, xs[:3])
    assert torch.autograd.gradgradcheck(plain, xs[:3])


def test_opcheck_every_operator():
    primals, tangents = make_inputs(2, 2, 1, 6, 9, 4, 5, dtype=torch.float32)
    mask = torch.rand(2, 9, generator=torch.Generator().manual_seed(0)) > 0.3
    q, k, v = (x.requires_grad_() for x in primals)
    tq, tk, tv = (x.requires_grad_() for x in tangents)
    scale = 0.7
    out, tout, lse, mu = torch.ops.flowcore.attn_fwd_jvp(q, k, v, tq, tk, tv, mask, True, scale)
    cases = {
        "attn_fwd": (q, k, v, mask, True, scale),
        "attn_fwd_jvp": (q, k, v, tq, tk, tv, mask, True, scale),
        "attn_bwd": (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse, mask, True, scale),
        "attn_jvp_bwd": (torch.randn_like(out), torch.randn_like(out), *(x.detach() for x in (q, k, v, tq, tk, tv)),
                         out.detach(), tout.detach(), lse, mu, mask, True, scale),
    }
    for name, args in cases.items():
        torch.library.opcheck(getattr(torch.ops.flowcore, name).default, args)


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


def test_detached_tangent_takes_the_primal_only_backward():
    primals, tangents = make_inputs(1, 2, 2, 30, 30, 8, 8)
    xs = [x.clone().requires_grad_() for x in primals]
    out, tout = torch.func.jvp(lambda q, k, v: fused_attention(q, k, v, causal=True), tuple(xs), tuple(tangents))
    loss = (out * (out - tout.detach())).sum()  # MeanFlow-style: the tangent only enters a detached target
    with _OpRecorder() as rec:
        grads = torch.autograd.grad(loss, xs)
    assert "flowcore::attn_bwd" in rec.names and "flowcore::attn_jvp_bwd" not in rec.names
    ref = [x.clone().requires_grad_() for x in primals]
    rout, rtout = torch.func.jvp(lambda q, k, v: sdpa_math(q, k, v, True), tuple(ref), tuple(tangents))
    rgrads = torch.autograd.grad((rout * (rout - rtout.detach())).sum(), ref)
    for a, r in zip(grads, rgrads):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)


def test_compiled_equals_eager_for_tangent_and_gradients_through_it():
    torch._dynamo.reset()
    primals, tangents = make_inputs(2, 2, 1, 24, 24, 16, 16, dtype=torch.float32)
    mask = torch.rand(2, 24, generator=torch.Generator().manual_seed(5)) > 0.2
    lin = torch.nn.Linear(16, 16)

    def loss_fn(q, k, v, tq):
        # the tangent comes from a parameterised layer, and the loss depends on it (TVM-style)
        out, tout = torch.func.jvp(lambda q_: fused_attention(q_, k, v, causal=True, key_padding_mask=mask), (q,), (lin(tq),))
        return out.square().mean() + tout.square().mean(), tout

    compiled = torch.compile(loss_fn, backend="inductor", fullgraph=True)
    results = []
    for fn in (loss_fn, compiled):
        lin.zero_grad()
        q = primals[0].clone().requires_grad_()
        loss, tout = fn(q, primals[1], primals[2], tangents[0])
        loss.backward()
        results.append((tout.detach(), q.grad.clone(), lin.weight.grad.clone()))
    assert results[0][0].abs().max() > 1e-2  # a zero tangent would be a silent failure
    for a, r in zip(*results):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


def test_blockwise_fallback_matches_the_kernel():
    primals, tangents = make_inputs(2, 4, 2, 300, 530, 16, 8)
    mask = torch.rand(2, 530, generator=torch.Generator().manual_seed(0)) > 0.4
    mask[0] = False
    got = _blockwise.attn_fwd_jvp(*primals, *tangents, mask, True, 0.3)
    ref = torch.ops.flowcore.attn_fwd_jvp(*primals, *tangents, mask, True, 0.3)
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    g, h = torch.randn_like(ref[0]), torch.randn_like(ref[0])
    got_b = _blockwise.attn_jvp_bwd(g, h, *primals, *tangents, *ref, mask, True, 0.3)
    ref_b = torch.ops.flowcore.attn_jvp_bwd(g, h, *primals, *tangents, *ref, mask, True, 0.3)
    for a, r in zip(got_b, ref_b):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    got_p = _blockwise.attn_jvp_bwd(g, None, *primals, None, None, None, ref[0], None, ref[2], None, mask, True, 0.3)[:3]
    ref_p = torch.ops.flowcore.attn_bwd(g, *primals, ref[0], ref[2], mask, True, 0.3)
    for a, r in zip(got_p, ref_p):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_extension_is_built_in_this_checkout():
    assert extension_available(), "flowcore._C is missing: run `pip install --no-build-isolation -e .`"


@pytest.mark.parametrize(
    "change,error",
    [
        (lambda q, k, v: (q.int(), k, v), TypeError),
        (lambda q, k, v: (q, k.float(), v), TypeError),
        (lambda q, k, v: (q[0], k, v), ValueError),
        (lambda q, k, v: (q, k[:, :1].expand(-1, 3, -1, -1), v[:, :1].expand(-1, 3, -1, -1)), ValueError),
        (lambda q, k, v: (q, k[..., :3], v), ValueError),
        (lambda q, k, v: (q, k, v[:, :, :5]), ValueError),
    ],
)
def test_bad_inputs_raise_named_errors(change, error):
    primals, _ = make_inputs(1, 4, 2, 6, 7, 4, 4)
    with pytest.raises(error, match="fused_attention"):
        fused_attention(*change(*primals))


def test_bad_mask_and_tangent_raise():
    primals, tangents = make_inputs(1, 2, 2, 6, 7, 4, 4)
    with pytest.raises(TypeError, match="key_padding_mask"):
        fused_attention(*primals, key_padding_mask=torch.ones(1, 7))
    with pytest.raises(ValueError, match="key_padding_mask"):
        fused_attention(*primals, key_padding_mask=torch.ones(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="tk"):
        attention_jvp(*primals, tangents[0], tangents[0], tangents[2])
    with pytest.raises(ValueError, match="scale"):
        fused_attention(*primals, scale=math.inf)
