"""flowcore.attention.attention dispatches to the fused op under AttentionBackend.FUSED: inside
torch.func.jvp it matches the MATH backend, tangent and gradients through the tangent included."""

from __future__ import annotations

import pytest
import torch

from flowcore.attention import AttentionBackend, attention, attention_backend


@pytest.mark.parametrize("causal,masked,hkv", [(False, False, 4), (True, False, 2), (False, True, 1)])
def test_fused_backend_matches_math_backend_under_jvp(causal, masked, hkv):
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 4, 21, 16), (2, hkv, 21, 16), (2, hkv, 21, 16)]
    primals = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    tangents = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    mask = (torch.rand(2, 21, generator=g) > 0.3) if masked else None
    weight = torch.randn(2, 4, 21, 16, generator=g, dtype=torch.float64)
    results = []
    for backend in (AttentionBackend.FUSED, AttentionBackend.MATH):
        xs = [x.clone().requires_grad_() for x in (*primals, *tangents)]
        with attention_backend(backend):
            out, tout = torch.func.jvp(lambda q, k, v: attention(q, k, v, causal=causal, key_padding_mask=mask), tuple(xs[:3]), tuple(xs[3:]))
        grads = torch.autograd.grad((out * weight).sum() + tout.square().sum(), xs)
        results.append((out.detach(), tout.detach(), *grads))
    for a, r in zip(*results):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)
    assert results[0][1].abs().max() > 0.1  # the tangent is not silently zero


def test_fused_backend_plain_forward_and_backward():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 13, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    outs = []
    for backend in (AttentionBackend.FUSED, AttentionBackend.MATH):
        with attention_backend(backend):
            out = attention(q, k, v, causal=True)
        outs.append((out, *torch.autograd.grad(out.sin().sum(), (q, k, v))))
    for a, r in zip(*outs):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
