"""The fused JVP-attention back end inside a real loss: a MeanFlow loss on the DiT and its parameter
gradients equal those of the SDPA(MATH) JVP path to fp32 tolerance (and to 1e-10 in fp64)."""

import pytest
import torch

from flowcore import losses, targets
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, sample_path
from flowcore.nn import Conditioning, DiT, DiTConfig
from flowcore.times import LogitNormal, sample_pairs


def meanflow_loss_and_grads(model, method, x, y, eps, t, s):
    z, v = sample_path(LinearPath(), x, eps, t)
    u, du_dt = DirectionalDerivative(method)(lambda z_, t_: model(z_, t_, s, y), (z, t), (v, torch.ones_like(t)))
    per = losses.squared_error(u, targets.meanflow_target(v, t, s, du_dt).detach(), losses.Reduce.SUM)
    loss = losses.adaptively_weighted(per, 1.0, 1e-2).mean()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), du_dt, grads


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("conditioning", list(Conditioning))
def test_fused_meanflow_loss_and_gradients_match_math_path(dtype, tol, conditioning):
    torch.manual_seed(0)
    model = DiT(DiTConfig(width=32, depth=2, heads=2, num_classes=10, conditioning=conditioning)).to(dtype)
    with torch.no_grad():  # move off the zero init so every parameter matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=dtype)
    eps = torch.randn(6, 1, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (6,), generator=g)
    t, s = sample_pairs(6, LogitNormal(-0.4, 1.0), equal_fraction=0.25, generator=g)
    t, s = t.to(dtype), s.to(dtype)
    loss_m, du_m, grads_m = meanflow_loss_and_grads(model, Derivative.JVP, x, y, eps, t, s)
    loss_f, du_f, grads_f = meanflow_loss_and_grads(model, Derivative.FUSED, x, y, eps, t, s)
    assert du_m.abs().max() > 1e-2  # a non-trivial derivative
    torch.testing.assert_close(du_f, du_m, rtol=tol, atol=tol)
    torch.testing.assert_close(loss_f, loss_m, rtol=tol, atol=tol)
    for a, b in zip(grads_f, grads_m):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))
