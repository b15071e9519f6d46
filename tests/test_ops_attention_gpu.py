"""The CUDA kernel against the CPU kernel (same contract, same tile math). Skipped without a GPU; the
CUDA sources are compiled in CI by .ci/compile_cuda.sh but never run there."""

from __future__ import annotations

import pytest
import torch

from flowcore.ops import attention_jvp, extension_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_matches_cpu_forward_tangent_and_gradients(dtype, causal):
    import flowcore._C as ext

    if not (extension_available() and ext.with_cuda):
        pytest.skip("flowcore._C was built without CUDA")
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 4, 70, 32), (2, 2, 90, 32), (2, 2, 90, 16)]
    xs = [torch.randn(s, generator=g, dtype=dtype) for s in (*shapes, *shapes)]
    mask = torch.rand(2, 90, generator=g) > 0.3
    mask[1] = False  # fully masked rows
    results = []
    for device in ("cpu", "cuda"):
        inputs = [x.to(device).requires_grad_() for x in xs]
        out, tout = attention_jvp(*inputs, causal=causal, key_padding_mask=mask.to(device))
        grads = torch.autograd.grad(out.square().sum() + (tout * out.detach()).sum(), inputs)
        results.append([t.detach().cpu() for t in (out, tout, *grads)])
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for a, r in zip(*results):
        torch.testing.assert_close(a, r, rtol=tol, atol=tol)
