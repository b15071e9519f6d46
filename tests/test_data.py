"""flowcore.data against oracles: closed-form Gaussian flow (DESIGN.md), Tweedie's formula, the
continuity equation, importance-sampling estimates, and the documented toy geometry."""

import importlib.resources
import math

import numpy as np
import pytest
import torch

from flowcore import data
from flowcore.metrics import sliced_w2

f64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def full(b: int, value: float) -> torch.Tensor:
    return torch.full((b,), value, dtype=f64)


# ---------------------------------------------------------------------------------------------- toys


@pytest.mark.parametrize("toy", list(data.Toy2D))
def test_toys_shape_dtype_determinism(toy):
    x = toy.sample(500, gen(3))
    assert x.shape == (500, 2) and x.dtype == torch.float32
    assert torch.equal(x, toy.sample(500, gen(3)))
    assert not torch.equal(x, toy.sample(500, gen(4)))
    assert data.Toy2D(str(toy)) is toy  # argparse: type=Toy2D


def test_checkerboard_geometry_and_moments():
    x = data.checkerboard(100_000, gen(0)).double()
    assert x.abs().max() <= 2
    col, row = torch.floor(x[:, 0] + 2), torch.floor(x[:, 1] + 2)
    assert ((col + row) % 2 == 0).all()  # only dark squares
    counts = torch.bincount((4 * col + row).long(), minlength=16).double() / len(x)
    dark = ((torch.arange(16) // 4 + torch.arange(16) % 4) % 2 == 0)
    assert torch.allclose(counts[dark], torch.full((8,), 1 / 8, dtype=f64), atol=0.006)
    assert torch.allclose(x.var(0), torch.full((2,), 4 / 3, dtype=f64), rtol=0.02)


def test_eight_gaussians_is_the_ring_mixture():
    x = data.eight_gaussians(40_000, gen(0)).double()
    ring = data.ring_mixture()
    nearest = torch.cdist(x, ring.means).argmin(1)
    residual = x - ring.means[nearest]
    assert torch.allclose(residual.std(0), torch.full((2,), 0.1, dtype=f64), rtol=0.03)
    assert torch.allclose(torch.bincount(nearest).double() / len(x), torch.full((8,), 1 / 8, dtype=f64), atol=0.01)
    assert torch.allclose(x.var(0), torch.full((2,), 1.01, dtype=f64), rtol=0.03)


def test_moons_lie_on_the_two_half_circles():
    x = data.moons(20_000, gen(0)).double() + torch.tensor([0.5, 0.25], dtype=f64)
    upper = (x - torch.tensor([0.0, 0.0], dtype=f64)).norm(dim=1) - 1
    lower = (x - torch.tensor([1.0, 0.5], dtype=f64)).norm(dim=1) - 1
    dist = torch.minimum(upper.abs(), lower.abs())
    assert dist.max() < 6 * 0.05 * math.sqrt(2)
    assert 0.03 < dist.mean() < 0.05  # the radial part of N(0, 0.05^2 I): E|N(0, 0.05^2)| = 0.04


def test_spirals_radius_and_variance():
    x = data.spirals(50_000, gen(0)).double()
    r = x.norm(dim=1)
    assert r.max() < 2 + 6 * 0.05
    assert torch.allclose(x.var(0), torch.full((2,), 1.0025, dtype=f64), rtol=0.05)  # E r^2 / 2 = 1, + noise


@pytest.mark.parametrize("bad, err", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)])
def test_toys_reject_bad_n(bad, err):
    with pytest.raises(err, match="n must"):
        data.checkerboard(bad)


def test_toys_reject_bad_generator():
    with pytest.raises(TypeError, match="generator"):
        data.moons(10, generator=0)


# --------------------------------------------------------------------------- single-Gaussian oracle


@pytest.mark.parametrize("t_value", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_gaussian_velocity_and_density_match_design_closed_form(t_value):
    s, d, b = 0.7, 3, 16
    g = data.gaussian(d, s)
    z = torch.randn(b, d, generator=gen(0), dtype=f64)
    t = full(b, t_value)
    sigma2 = (1 - t_value) ** 2 * s**2 + t_value**2
    v = z * (t_value - (1 - t_value) * s**2) / sigma2
    torch.testing.assert_close(g.velocity(z, t), v, rtol=1e-13, atol=1e-14)
    log_p = -0.5 * (z**2).sum(1) / sigma2 - 0.5 * d * math.log(2 * math.pi * sigma2)
    torch.testing.assert_close(g.log_prob(z, t), log_p, rtol=1e-13, atol=1e-13)


def test_gaussian_flow_map_and_average_velocity_match_closed_form():
    s_std, b = 0.6, 6
    g = data.gaussian(2, s_std)
    z = torch.randn(b, 2, generator=gen(1), dtype=f64)
    t = torch.tensor([1.0, 1.0, 0.8, 0.5, 0.3, 0.4], dtype=f64)
    s = torch.tensor([0.0, 0.5, 0.1, 0.0, 0.3, 0.2], dtype=f64)  # includes s == t
    sigma = lambda u: ((1 - u) ** 2 * s_std**2 + u**2).sqrt()  # noqa: E731
    ratio = (sigma(s) / sigma(t))[:, None]
    torch.testing.assert_close(g.flow_map(z, t, s, n_steps=200), z * ratio, rtol=1e-9, atol=1e-9)
    u = g.average_velocity(z, t, s, n_steps=200)
    gap = (t - s)[:, None]
    exact = torch.where(gap > 0, z * (1 - ratio) / gap.clamp(min=1e-300), g.velocity(z, t))
    torch.testing.assert_close(u, exact, rtol=1e-8, atol=1e-8)
    assert torch.equal(g.flow_map(z, t[4:5].expand(b), s[4:5].expand(b)), z)  # s == t: identity


# -------------------------------------------------------------------------------- mixture oracles


@pytest.fixture(scope="module")
def cc():
    return data.class_conditional_mixture()


@pytest.mark.parametrize("conditional", [False, True])
def test_velocity_matches_tweedie_from_log_prob(cc, conditional):
    """For the linear path E[eps | z] = -t grad log p_t(z) and z = (1-t) E[x|z] + t E[eps|z], so
    v = (-t grad log p_t(z) - z) / (1 - t): the velocity follows from the density alone."""
    b = 64
    z = (1.5 * torch.randn(b, 2, generator=gen(2), dtype=f64)).requires_grad_(True)
    t = torch.rand(b, generator=gen(3), dtype=f64) * 0.98 + 0.01
    y = torch.randint(0, 3, (b,), generator=gen(4)) if conditional else None
    (score,) = torch.autograd.grad(cc.log_prob(z, t, y).sum(), z)
    expected = (-t[:, None] * score - z) / (1 - t[:, None])
    torch.testing.assert_close(cc.velocity(z.detach(), t, y), expected.detach(), rtol=1e-10, atol=1e-10)


def test_velocity_matches_importance_sampling_estimate(cc):
    """v(z, t) = E[eps - x | z_t = z] = E[(z - x)/t | z_t = z], estimated by self-normalised importance
    sampling of data draws x_i with weights N(z; (1-t) x_i, t^2 I): independent of the closed form."""
    x, _ = cc.sample(400_000, gen(5))
    z = torch.tensor([[1.0, 0.5], [-0.8, 1.2], [0.2, -1.4]], dtype=f64)
    t_value = 0.5
    log_w = -((z[:, None, :] - (1 - t_value) * x[None]) ** 2).sum(-1) / (2 * t_value**2)
    w = torch.softmax(log_w, dim=1)
    estimate = ((z[:, None, :] - x[None]) / t_value * w[..., None]).sum(1)
    ess = 1 / (w**2).sum(1)
    assert (ess > 5_000).all()
    torch.testing.assert_close(cc.velocity(z, full(3, t_value)), estimate, rtol=0, atol=0.02)


@pytest.mark.parametrize("conditional", [False, True])
def test_continuity_equation(cc, conditional):
    """d/dt log p_t + div v + v . grad log p_t = 0, all derivatives by autograd in float64."""
    b = 32
    z = (1.5 * torch.randn(b, 2, generator=gen(6), dtype=f64)).requires_grad_(True)
    t = (torch.rand(b, generator=gen(7), dtype=f64) * 0.96 + 0.02).requires_grad_(True)
    y = torch.randint(0, 3, (b,), generator=gen(8)) if conditional else None
    log_p = cc.log_prob(z, t, y)
    dlogp_dt, score = torch.autograd.grad(log_p.sum(), (t, z))
    v = cc.velocity(z, t, y)
    div = sum(torch.autograd.grad(v[:, i].sum(), z, retain_graph=True)[0][:, i] for i in range(2))
    residual = dlogp_dt + div + (v * score).sum(1)
    scale = dlogp_dt.abs() + div.abs() + (v * score).sum(1).abs()
    assert (scale > 1e-3).all()
    assert (residual.abs() < 1e-10 * (1 + scale)).all(), residual.abs().max()


def test_velocity_edge_times(cc):
    """t = 0: v = -z (posterior is a point mass at z); t = 1: v = z - E[x] (posterior is the prior)."""
    z = torch.randn(10, 2, generator=gen(9), dtype=f64)
    torch.testing.assert_close(cc.velocity(z, full(10, 0.0)), -z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cc.velocity(z, full(10, 1.0)), z - cc.weights @ cc.means, rtol=1e-12, atol=1e-12)
    post0 = cc.posterior(z, full(10, 0.0))
    torch.testing.assert_close(post0.mean(), z, rtol=1e-12, atol=1e-12)
    assert post0.covs.abs().max() == 0
    torch.testing.assert_close(cc.posterior_sample(z, full(10, 0.0), 3, gen(0)), z[:, None, :].expand(10, 3, 2), rtol=1e-12, atol=1e-12)
    post1 = cc.posterior(z, full(10, 1.0))
    torch.testing.assert_close(post1.weights, cc.weights.expand(10, -1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(post1.covs, cc.covs.expand(10, -1, -1, -1), rtol=1e-12, atol=1e-12)


def test_posterior_mean_is_consistent_with_velocity(cc):
    """E[x | z_t] = z - t v(z, t) on the linear path."""
    z = torch.randn(20, 2, generator=gen(10), dtype=f64)
    t = torch.rand(20, generator=gen(11), dtype=f64)
    torch.testing.assert_close(cc.posterior(z, t).mean(), z - t[:, None] * cc.velocity(z, t), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("conditional", [False, True])
def test_posterior_sampling_reproduces_posterior_moments(cc, conditional):
    n = 40_000
    z = torch.tensor([[0.3, 0.9], [-1.0, -0.2], [1.2, -0.6]], dtype=f64)
    t = torch.tensor([0.3, 0.6, 0.9], dtype=f64)
    y = torch.tensor([0, 1, 2]) if conditional else None
    draws = cc.posterior_sample(z, t, n, gen(12), y)
    post = cc.posterior(z, t, y)
    mean, cov = post.mean(), post.covariance()
    # Monte-Carlo tolerance: 5 standard errors of the mean, 10 % (+ small absolute) on the covariance
    std_err = (torch.diagonal(cov, dim1=1, dim2=2) / n).sqrt()
    assert ((draws.mean(1) - mean).abs() < 5 * std_err).all()
    emp_cov = torch.stack([torch.cov(d.T) for d in draws])
    torch.testing.assert_close(emp_cov, cov, rtol=0.1, atol=0.005)
    assert (torch.linalg.eigvalsh(cov) > 0).all()


def test_ode_pushforward_of_noise_matches_the_ring():
    """Noise pushed from t = 1 to t = 0 by the exact velocity is distributed as the data: sliced W2
    to fresh data within 1.5x the data-vs-data floor, and every mode gets 1/8 of the mass."""
    ring, n = data.ring_mixture(), 1000
    noise = torch.randn(n, 2, generator=gen(13), dtype=f64)
    x0 = ring.flow_map(noise, full(n, 1.0), full(n, 0.0), n_steps=100)
    ref, other = ring.sample(n, gen(14))[0], ring.sample(n, gen(15))[0]
    assert sliced_w2(x0, ref) < 1.5 * sliced_w2(other, ref)
    nearest = torch.cdist(x0, ring.means).argmin(1)
    share = torch.bincount(nearest, minlength=8).double() / n
    assert (share - 1 / 8).abs().max() < 0.035
    # within each mode the points are N(mu_k, 0.1^2 I): residual mean 0 and std 0.1 (standard errors
    # 0.003 and 1.6 %); a map off by 10 % in scale or spread fails this
    residual = x0 - ring.means[nearest]
    assert residual.mean(0).abs().max() < 0.012
    torch.testing.assert_close(residual.std(0), torch.full((2,), 0.1, dtype=f64), rtol=0.06, atol=0)
    # a 2x finer solve moves the points by less than 1e-4: the 100-step solve is converged for this check
    finer = ring.flow_map(noise[:50], full(50, 1.0), full(50, 0.0), n_steps=200)
    assert (finer - x0[:50]).abs().max() < 1e-4


def test_conditional_flow_lands_in_the_class(cc):
    n = 300
    y = torch.arange(n) % 3
    x0 = cc.flow_map(torch.randn(n, 2, generator=gen(16), dtype=f64), full(n, 1.0), full(n, 0.0), y, n_steps=60)
    post = cc.posterior(x0, full(n, 0.0))  # at t = 0 the weights are the components' responsibilities for x0
    assert (cc.classes[post.weights.argmax(1)] == y).double().mean() > 0.99


def test_conditional_sample_respects_class(cc):
    y = torch.tensor([0, 1, 2, 2, 1, 0] * 50)
    _, comp = cc.sample(len(y), gen(17), y)
    assert torch.equal(cc.classes[comp], y)
    _, comp = cc.sample(60_000, gen(18))
    share = torch.bincount(comp, minlength=6).double() / 60_000
    torch.testing.assert_close(share, cc.weights, rtol=0, atol=0.01)


# ------------------------------------------------------------------------------------- bad inputs


def test_mixture_rejects_bad_inputs(cc):
    z = torch.zeros(4, 2, dtype=f64)
    t = full(4, 0.5)
    with pytest.raises(TypeError, match="t must be a Tensor"):
        cc.velocity(z, 0.5)
    with pytest.raises(ValueError, match=r"t must have shape \(4,\)"):
        cc.velocity(z, full(3, 0.5))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        cc.velocity(z, full(4, 1.5))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 2\)"):
        cc.velocity(torch.zeros(4, 3, dtype=f64), t)
    with pytest.raises(ValueError, match="z contains NaN"):
        cc.velocity(torch.full((4, 2), float("nan"), dtype=f64), t)
    with pytest.raises(ValueError, match="s must be <= t"):
        cc.flow_map(z, t, full(4, 0.7))
    with pytest.raises(ValueError, match="y contains a class with no component"):
        cc.velocity(z, t, torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ValueError, match="y must be an int64"):
        cc.velocity(z, t, torch.tensor([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="n_per_point must be >= 1"):
        cc.posterior_sample(z, t, 0)


def test_mixture_construction_rejects_bad_parameters():
    w, m = torch.ones(2), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="positive definite"):
        data.GaussianMixture(w, m, torch.stack([torch.eye(2), torch.diag(torch.tensor([1.0, 0.0]))]))
    with pytest.raises(ValueError, match="symmetric"):
        data.GaussianMixture(w, m, torch.tensor([[[1.0, 0.5], [0.0, 1.0]]] * 2))
    with pytest.raises(ValueError, match=r"covs must have shape \(2, 2, 2\)"):
        data.GaussianMixture(w, m, torch.eye(2)[None])
    with pytest.raises(ValueError, match="weights must be finite and positive"):
        data.GaussianMixture(torch.tensor([1.0, -1.0]), m, torch.eye(2).expand(2, 2, 2).clone())
    with pytest.raises(ValueError, match="classes must be an int64"):
        data.GaussianMixture(w, m, torch.eye(2).expand(2, 2, 2).clone(), torch.tensor([0.0, 1.0]))


# ------------------------------------------------------------------------------------------ digits


def test_load_digits_matches_the_asset():
    x, y = data.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    with np.load(importlib.resources.files("flowcore") / "assets" / "digits.npz") as npz:
        raw_images, raw_labels = npz["images"], npz["labels"]
    torch.testing.assert_close(x[:, 0], torch.from_numpy(raw_images.astype(np.float32)) / 16 * 2 - 1, rtol=0, atol=0)
    assert torch.equal(y, torch.from_numpy(raw_labels.astype(np.int64)))
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(torch.bincount(y), torch.tensor([178, 182, 177, 183, 181, 182, 181, 179, 174, 180]))


@pytest.mark.parametrize("split, fraction, sizes", [
    (data.digits_halves, 0.5, (898, 899)),
    (data.digits_train_heldout, 1 - data.DIGITS_HELDOUT_FRACTION, (1438, 359)),
])
def test_digits_splits_are_disjoint_stratified_and_fixed(split, fraction, sizes):
    (xa, ya), (xb, yb) = split()
    x, y = data.load_digits()
    assert (len(ya), len(yb)) == sizes
    # together the two parts are the whole data set, each image once
    both = torch.cat([xa, xb]).flatten(1)
    assert torch.unique(both, dim=0).shape[0] == torch.unique(x.flatten(1), dim=0).shape[0]
    assert torch.equal(both.sum(0), x.flatten(1).sum(0))
    counts = torch.bincount(ya, minlength=10).double()
    assert ((counts - fraction * torch.bincount(y).double()).abs() <= 0.5 + 1e-9).all()  # stratified up to rounding
    (xa2, _), _ = split()
    assert torch.equal(xa, xa2)


def test_stratified_split_is_a_frozen_permutation():
    """numpy's RandomState stream is frozen, so the split indices never change across versions."""
    a, b = data.stratified_split(torch.tensor([0] * 5 + [1] * 5), 0.4, seed=0)
    assert a.tolist() == [0, 2, 5, 7] and b.tolist() == [1, 3, 4, 6, 8, 9]


def test_stratified_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        data.stratified_split(torch.zeros(4, dtype=torch.int64), 1.0, 0)
