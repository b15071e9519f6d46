"""Primitives against oracles: closed-form Gaussian flow, fp64 finite differences, exact identities."""

import math

import pytest
import torch

from flowcore import derivatives, guidance, losses, sampling, targets, times
from flowcore.interpolants import (
    CosinePath, LinearPath, VPPath, eps_from_score, eps_from_v, eps_from_x, sample_path, score_from_eps,
    v_from_eps, v_from_x, x_from_eps, x_from_v,
)
from tests import oracles

PATHS = [LinearPath(), CosinePath(), VPPath()]
S2 = 0.25  # data variance of the Gaussian oracle


def _batch(n=64, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    eps = torch.randn(n, d, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return x, eps, t


# ---------------------------------------------------------------- interpolants
@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_path_derivatives_match_finite_differences(path):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    torch.testing.assert_close(path.da(t), (path.a(t + h) - path.a(t - h)) / (2 * h), rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(path.db(t), (path.b(t + h) - path.b(t - h)) / (2 * h), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_conditional_velocity_is_time_derivative_of_z(path):
    x, eps, t = _batch()
    z, v = sample_path(path, x, eps, t)
    _, dz = torch.func.jvp(lambda tt: sample_path(path, x, eps, tt)[0], (t,), (torch.ones_like(t),))
    torch.testing.assert_close(v, dz, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_conversions_round_trip(path):
    x, eps, t = _batch()
    z, v = sample_path(path, x, eps, t)
    torch.testing.assert_close(x_from_eps(path, z, eps, t), x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_from_x(path, z, x, t), eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(v_from_x(path, z, x, t), v, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(v_from_eps(path, z, eps, t), v, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x_from_v(path, z, v, t), x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_from_v(path, z, v, t), eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_from_score(path, score_from_eps(path, eps, t), t), eps, rtol=1e-12, atol=1e-12)


def test_linear_path_endpoints_and_velocity():
    x, eps, _ = _batch()
    path = LinearPath()
    for tv, expect in ((0.0, x), (1.0, eps)):
        z, v = sample_path(path, x, eps, torch.full((x.shape[0],), tv, dtype=torch.float64))
        torch.testing.assert_close(z, expect)
        torch.testing.assert_close(v, eps - x)


def test_marginal_score_of_gaussian_data():
    """E[eps | z] for data N(0, s^2 I) is t z / sigma_t^2, so the score is -z / sigma_t^2."""
    _, _, t = _batch()
    z = torch.randn(t.shape[0], 3, dtype=torch.float64)
    mean_eps = z * (t / oracles.sigma(t, S2) ** 2)[:, None]
    torch.testing.assert_close(score_from_eps(LinearPath(), mean_eps, t), -z / oracles.sigma(t, S2)[:, None] ** 2)


def test_time_shape_mismatch_raises():
    x, eps, t = _batch()
    with pytest.raises(ValueError, match="times must have shape"):
        sample_path(LinearPath(), x, eps, t[:-1])
    with pytest.raises(ValueError, match="same shape"):
        sample_path(LinearPath(), x, eps[:, :2], t)


# ---------------------------------------------------------------- times
def test_logit_normal_moments_and_lognormal_sigma_equivalence():
    g = torch.Generator().manual_seed(0)
    t = times.LogitNormal(-0.4, 1.0).sample(200_000, g)
    logit = torch.log(t) - torch.log1p(-t)
    assert abs(logit.mean().item() + 0.4) < 0.01 and abs(logit.std().item() - 1.0) < 0.01
    a = times.LogitNormal(-1.1, 2.0).sample(1000, torch.Generator().manual_seed(3))
    b = times.LogNormalSigma(-1.1, 2.0).sample(1000, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_sample_pairs_order_and_exact_equal_fraction():
    t, s = times.sample_pairs(1000, times.LogitNormal(-0.4, 1.0), equal_fraction=0.75, generator=torch.Generator().manual_seed(1))
    assert bool((s <= t).all())
    assert int((s == t).sum()) == 750
    # equal rows take t = max of two draws after sorting, one draw's marginal before sorting
    g = torch.Generator().manual_seed(2)
    t_after, s_after = times.sample_pairs(100_000, times.Uniform(), equal_fraction=1.0, generator=g)
    t_before, _ = times.sample_pairs(100_000, times.Uniform(), equal_fraction=1.0, equal_before_sort=True, generator=g)
    assert abs(t_after.mean().item() - 2 / 3) < 0.01 and abs(t_before.mean().item() - 0.5) < 0.01


def test_discrete_grid_and_uniform_grid():
    vals = times.DiscreteGrid((0.1, 0.5, 0.9)).sample(3000, torch.Generator().manual_seed(0))
    counts = torch.stack([(vals == v).sum() for v in torch.tensor([0.1, 0.5, 0.9])])
    assert counts.sum() == 3000 and counts.min() > 900
    torch.testing.assert_close(times.uniform_grid(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_mixture_weights_components():
    mix = times.Mixture((times.Uniform(0.0, 0.1), times.Uniform(0.9, 1.0)), (0.25, 0.75))
    t = mix.sample(40_000, torch.Generator().manual_seed(0))
    assert bool(((t <= 0.1) | (t >= 0.9)).all())
    assert abs((t >= 0.9).float().mean().item() - 0.75) < 0.01
    with pytest.raises(ValueError, match="sum to 1"):
        times.Mixture((times.Uniform(),), (0.5,))


def test_check_times_names_the_problem():
    t = torch.tensor([0.5, 0.7])
    with pytest.raises(ValueError, match="s must be <= t"):
        times.check_times(t, torch.tensor([0.6, 0.1]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        times.check_times(torch.tensor([0.5, 1.2]))
    with pytest.raises(ValueError, match="shape"):
        times.check_times(torch.tensor(0.5))
    with pytest.raises(ValueError, match="NaN"):
        times.check_times(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="entries"):
        times.check_times(t, batch=3)
    with pytest.raises(ValueError):
        times.Uniform(0.5, 0.2)


# ---------------------------------------------------------------- derivatives
def _net(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    body = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.Tanh(), torch.nn.Dropout(dropout), torch.nn.Linear(32, 3)).double()

    def f(z, t, s):
        return body(torch.cat([z, t[:, None], s[:, None]], 1))

    return body, f


def test_jvp_matches_central_difference_fp64_and_fd_error_is_second_order():
    _, f = _net()
    z, v, t = _batch(16)
    s = t * 0.5
    tangents = (v, torch.ones_like(t), None)
    out, d_exact = derivatives.jvp(f, (z, t, s), tangents)
    torch.testing.assert_close(out, f(z, t, s))
    _, d_fd = derivatives.finite_difference(f, (z, t, s), tangents, step=1e-5)
    rel = (d_fd - d_exact).norm() / d_exact.norm()
    assert rel < 1e-8, rel
    errs = [(derivatives.finite_difference(f, (z, t, s), tangents, step=h)[1] - d_exact).norm().item() for h in (4e-2, 2e-2, 1e-2)]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(3.6 < r < 4.4 for r in ratios), ratios  # central difference: error ~ h^2
    errs_fwd = [(derivatives.finite_difference(f, (z, t, s), tangents, step=h, scheme=derivatives.FDScheme.FORWARD)[1] - d_exact).norm().item() for h in (4e-3, 2e-3)]
    assert 1.8 < errs_fwd[0] / errs_fwd[1] < 2.2  # forward difference: error ~ h


def test_jvp_detaches_unless_asked_and_gradient_through_tangent_is_exact():
    body, f = _net()
    z, v, t = _batch(8)
    s = t * 0.5
    tangents = (torch.zeros_like(z), None, torch.ones_like(s))  # d/ds, TVM-style
    _, d_detached = derivatives.jvp(f, (z, t, s), tangents)
    assert not d_detached.requires_grad
    _, d = derivatives.jvp(f, (z, t, s), tangents, grad_through_tangent=True)
    (g_jvp,) = torch.autograd.grad(d.pow(2).sum(), [body[0].weight])
    # reference: gradient of the fp64 central FD of the same quantity (the FD is differentiable)
    _, d_fd = derivatives.finite_difference(f, (z, t, s), tangents, step=1e-5, grad_through_tangent=True)
    (g_fd,) = torch.autograd.grad(d_fd.pow(2).sum(), [body[0].weight])
    torch.testing.assert_close(g_jvp, g_fd, rtol=1e-6, atol=1e-8)


def test_fd_shares_rng_state_so_dropout_masks_match():
    body, f = _net(dropout=0.3)
    body.train()
    z, v, t = _batch(8)
    s = t * 0.5
    tangents = (v, torch.ones_like(t), None)
    torch.manual_seed(5)
    out_fd, d_fd = derivatives.finite_difference(f, (z, t, s), tangents, step=1e-6)
    after_fd = torch.rand(1)
    torch.manual_seed(5)
    out_jvp, d_jvp = derivatives.jvp(f, (z, t, s), tangents)
    after_jvp = torch.rand(1)
    torch.testing.assert_close(out_fd, out_jvp)
    torch.testing.assert_close(d_fd, d_jvp, rtol=1e-6, atol=1e-8)
    assert after_fd == after_jvp  # the outer RNG stream advanced as for one forward


def test_switchable_operator_and_bad_tangents():
    _, f = _net()
    z, v, t = _batch(8)
    s = t * 0.5
    tangents = (v, torch.ones_like(t), None)
    ref = derivatives.jvp(f, (z, t, s), tangents)[1]
    for method in derivatives.Derivative:
        if method is derivatives.Derivative.FUSED:
            continue  # needs attention in the model; tested with the DiT
        op = derivatives.DirectionalDerivative(method, fd_step=1e-6)
        torch.testing.assert_close(op(f, (z, t, s), tangents)[1], ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="tangent 0 has shape"):
        derivatives.jvp(f, (z, t, s), (v[:, :2], None, None))
    with pytest.raises(ValueError, match="at least one tangent"):
        derivatives.jvp(f, (z, t, s), (None, None, None))


# ---------------------------------------------------------------- targets on the closed-form flow
def _exact_meanflow_quantities():
    g = torch.Generator().manual_seed(0)
    n = 256
    z = torch.randn(n, 4, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.1
    s = t * torch.rand(n, generator=g, dtype=torch.float64)
    s[:32] = t[:32]  # rows with s = t
    v = oracles.velocity(z, t, S2)
    u_fn = lambda zz, tt: oracles.average_velocity(zz, tt, s, S2)
    u, du_dt = derivatives.jvp(u_fn, (z, t), (v, torch.ones_like(t)))
    return z, t, s, v, u, du_dt


def test_exact_average_velocity_is_a_fixed_point_of_the_meanflow_target():
    z, t, s, v, u, du_dt = _exact_meanflow_quantities()
    u_tgt = targets.meanflow_target(v, t, s, du_dt)
    torch.testing.assert_close(u_tgt, u, rtol=1e-9, atol=1e-10)
    loss = losses.squared_error(u, u_tgt.detach(), losses.Reduce.SUM)
    assert loss.max() < 1e-18
    # a wrong map is not a fixed point: the target moves it
    wrong = 1.1 * u
    assert (targets.meanflow_target(v, t, s, 1.1 * du_dt) - wrong).abs().max() > 1e-3


def test_exact_map_satisfies_imf_compound_identity():
    z, t, s, v, u, du_dt = _exact_meanflow_quantities()
    compound = targets.compound_velocity(u, du_dt, t, s)
    torch.testing.assert_close(compound, v, rtol=1e-9, atol=1e-10)
    assert losses.squared_error(compound, v, losses.Reduce.SUM).max() < 1e-18


def test_flow_map_step_and_x_prediction_on_exact_flow():
    z, t, s, v, u, du_dt = _exact_meanflow_quantities()
    torch.testing.assert_close(targets.flow_map_step(z, u, t, s), oracles.flow_map(z, t, s, S2), rtol=1e-10, atol=1e-12)
    x_hat = z - t[:, None] * u  # the x-prediction that reproduces u
    torch.testing.assert_close(targets.velocity_from_x_prediction(z, x_hat, t, t_floor=0.05), u)


def test_compound_velocity_gradient_flows_only_through_u():
    u = torch.randn(4, 3, requires_grad=True)
    du = torch.randn(4, 3, requires_grad=True)
    t, s = torch.full((4,), 0.8), torch.full((4,), 0.3)
    targets.compound_velocity(u, du, t, s).sum().backward()
    assert du.grad is None and torch.equal(u.grad, torch.ones_like(u))


# ---------------------------------------------------------------- losses
def test_adaptive_weight_carries_no_gradient_and_scales_gradient():
    pred = torch.randn(5, 3, requires_grad=True)
    target = torch.randn(5, 3)
    per = losses.squared_error(pred, target, losses.Reduce.SUM)
    w = losses.adaptive_weight(per, p=1.0, c=1e-2)
    assert not w.requires_grad
    losses.adaptively_weighted(per, p=0.75, c=1e-3).sum().backward()
    expect = 2 * (pred - target) / (per.detach() + 1e-3)[:, None] ** 0.75
    torch.testing.assert_close(pred.grad, expect)


def test_improved_meanflow_loss_values_and_gradient_weights():
    """Each head's gradient is 2 (pred - v_g) / (L + c), with L its own summed squared error."""
    V = torch.tensor([[1.0, 2.0], [0.0, 0.5]], requires_grad=True)
    v = torch.tensor([[0.0, 1.0], [3.0, 0.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    total, loss_u, loss_v = losses.improved_meanflow_loss(V, v, target, c=0.5)
    assert torch.equal(loss_u, torch.tensor([4.0, 1.25])) and torch.equal(loss_v, torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(total, torch.tensor([4 / 4.5 + 2 / 2.5, 1.25 / 1.75 + 5 / 5.5]))
    total.sum().backward()
    torch.testing.assert_close(V.grad, 2 * (V.detach() - target) / torch.tensor([[4.5], [1.75]]))
    torch.testing.assert_close(v.grad, 2 * (v.detach() - target) / torch.tensor([[2.5], [5.5]]))


def test_reductions_and_robust_losses():
    pred, target = torch.ones(2, 4), torch.zeros(2, 4)
    assert torch.equal(losses.squared_error(pred, target, losses.Reduce.SUM), torch.tensor([4.0, 4.0]))
    assert torch.equal(losses.squared_error(pred, target, losses.Reduce.MEAN), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(losses.pseudo_huber(pred, target, c=0.5), torch.tensor([math.sqrt(4.25) - 0.5] * 2))
    L = torch.tensor([0.3, 2.0])
    lv = torch.log(L).requires_grad_(True)  # optimum of the learned log-variance loss
    (g,) = torch.autograd.grad(losses.learned_log_variance(L, lv).sum(), lv)
    torch.testing.assert_close(g, torch.zeros(2), atol=1e-6, rtol=0)
    Lg = torch.tensor([0.3, 2.0], requires_grad=True)
    lv0 = torch.tensor([0.5, -1.0])
    (gc,) = torch.autograd.grad(losses.adaptive_cauchy(Lg, lv0, c=0.01).sum(), Lg)
    torch.testing.assert_close(gc, 1 / (Lg.detach() + 0.01 * torch.exp(lv0)))


def test_losses_reject_bad_inputs():
    with pytest.raises(ValueError, match="does not match"):
        losses.squared_error(torch.zeros(2, 3), torch.zeros(2, 4), losses.Reduce.SUM)
    with pytest.raises(ValueError, match="detach"):
        losses.squared_error(torch.zeros(2, 3), torch.zeros(2, 3, requires_grad=True), losses.Reduce.SUM)
    with pytest.raises(TypeError, match="Reduce"):
        losses.squared_error(torch.zeros(2, 3), torch.zeros(2, 3), "sum")


# ---------------------------------------------------------------- guidance
def test_guidance_fixed_points():
    g = torch.Generator().manual_seed(0)
    v_c, v_u = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    omega = torch.tensor([1.0, 1.5, 2.0, 3.0, 5.0, 7.0])
    torch.testing.assert_close(guidance.cfg_combine(v_c, v_u, omega), v_u + omega[:, None] * (v_c - v_u))
    # MeanFlow omega/kappa form: at its fixed point u_c = v_c, u_u = v_cfg(omega') with omega' = omega / (1 - kappa)
    om, ka = 1.0, 0.5
    w_eff = om / (1 - ka)
    v_cfg = guidance.cfg_combine(v_c, v_u, w_eff)
    torch.testing.assert_close(guidance.meanflow_guided_velocity(v_c, v_cfg, v_u, om, ka), v_cfg)


def test_imf_target_fixed_point_is_cfg_field():
    """If the v-head is the CFG field (v_head(y, omega) = v_u + omega (v_c - v_u)), the expectation of
    v + (1 - 1/omega)(v_head(y, omega) - v_u) over data equals it: E[v | z, y] = v_c."""
    g = torch.Generator().manual_seed(1)
    v_c, v_u = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    omega = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0])
    head = guidance.cfg_combine(v_c, v_u, omega)
    torch.testing.assert_close(guidance.imf_guided_velocity(v_c, head, v_u, omega), head)


def test_label_drop_among_rows_drops_a_binomial_count_of_eligible_rows_only():
    """The official MeanFlow / iMF code drops the first Binomial(B, p) rows, its r = t rows: with ``among`` only eligible
    rows lose their label, the batch's dropped fraction stays p, and the count is capped by the eligible rows."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat(20)
    among = torch.arange(200) % 2 == 0
    counts = []
    for _ in range(400):
        yd, dropped = guidance.drop_labels(y, 0.1, null_class=10, generator=gen, among=among)
        assert not bool(dropped[~among].any()) and bool((yd[dropped] == 10).all()) and torch.equal(yd[~dropped], y[~dropped])
        counts.append(int(dropped.sum()))
    counts_t = torch.tensor(counts, dtype=torch.float64)
    assert abs(counts_t.mean().item() - 20.0) < 0.5 and abs(counts_t.var().item() - 18.0) < 4.0  # Binomial(200, 0.1): mean 20, var 18
    few = torch.zeros(200, dtype=torch.bool)
    few[:3] = True
    _, dropped = guidance.drop_labels(y, 0.5, null_class=10, generator=gen, among=few)
    assert torch.equal(dropped, few)
    with pytest.raises(ValueError, match="among must be a boolean mask"):
        guidance.drop_labels(y, 0.1, 10, among=among.float())


def test_label_drop_and_sampling_cfg():
    y = torch.arange(10).repeat(1000)
    yd, dropped = guidance.drop_labels(y, 0.1, null_class=10, generator=torch.Generator().manual_seed(0))
    assert abs(dropped.float().mean().item() - 0.1) < 0.01 and bool((yd[dropped] == 10).all()) and torch.equal(yd[~dropped], y[~dropped])
    with pytest.raises(ValueError, match="int64"):
        guidance.drop_labels(y.float(), 0.1, 10)
    fn = lambda z, t, s, yy: z * 0 + yy[:, None].float()
    field = guidance.guided(fn, torch.tensor([2, 4]), w=3.0, null_class=10)
    torch.testing.assert_close(field(torch.zeros(2, 1), torch.ones(2), torch.ones(2)), torch.tensor([[10 + 3 * (2 - 10.0)], [10 + 3 * (4 - 10.0)]]))
    assert guidance.guidance_feature(torch.tensor([1.0])).item() == 0.0


# ---------------------------------------------------------------- samplers
def test_samplers_on_the_closed_form_flow():
    z1 = torch.randn(512, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = oracles.flow_map(z1, torch.ones(512, dtype=torch.float64), torch.zeros(512, dtype=torch.float64), S2)
    field = lambda z, t: oracles.velocity(z, t, S2)
    e_euler = [(sampling.euler(field, z1, times.uniform_grid(n).double()) - exact).abs().max().item() for n in (50, 100)]
    e_heun = [(sampling.heun(field, z1, times.uniform_grid(n).double()) - exact).abs().max().item() for n in (50, 100)]
    assert 1.8 < e_euler[0] / e_euler[1] < 2.2  # first order
    assert e_heun[1] < e_euler[1] / 10
    fmap = lambda z, t, s: oracles.average_velocity(z, t, s, S2)
    for steps in (1, 2, 4):
        torch.testing.assert_close(sampling.flow_map_sample(fmap, z1, times.uniform_grid(steps).double()), exact, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="decrease"):
        sampling.euler(field, z1, torch.tensor([0.0, 1.0]))


def test_attention_causal_with_padding_mask_matches_explicit_softmax():
    from flowcore.attention import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    keep = torch.tensor([[True, True, False, True, True], [True, True, True, True, False]])
    allowed = keep[:, None, None, :] & torch.ones(5, 5, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~allowed, float("-inf"))
    expect = torch.softmax(scores, -1) @ v
    torch.testing.assert_close(attention(q, k, v, causal=True, key_padding_mask=keep), expect)
    _, tangent = torch.func.jvp(lambda qq: attention(qq, k, v, causal=True, key_padding_mask=keep), (q,), (torch.ones_like(q),))
    assert torch.isfinite(tangent).all()


def test_targets_reject_bad_times():
    v = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="s must be <= t"):
        targets.meanflow_target(v, torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.7]), v)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        targets.compound_velocity(v, v, torch.tensor([1.5, 0.5]), torch.tensor([0.2, 0.1]))


def test_guidance_interval_and_scale_sampler():
    t = torch.tensor([0.1, 0.4, 0.6, 0.9])
    assert guidance.within_interval(t, 0.3, 0.7).tolist() == [False, True, True, False]
    omega = guidance.sample_guidance_scale(100_000, 4.0, torch.Generator().manual_seed(0))
    assert omega.min() >= 1.0 and omega.max() <= 4.0
    log_w = torch.log(omega)  # log-uniform on [0, log 4]: mean log 4 / 2, variance (log 4)^2 / 12
    assert abs(log_w.mean().item() - math.log(4) / 2) < 0.01
    assert abs(log_w.var().item() - math.log(4) ** 2 / 12) < 0.01
    with pytest.raises(ValueError, match="omega must be >= 1"):
        guidance.imf_guided_velocity(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0.5]))


def test_logit_normal_with_uniform_has_the_mixture_cdf():
    """P(t < a) = (1 - f) Phi(logit(a) / 0.8) + f a for pMF's logit-normal(0, 0.8) with f = 0.1 uniform; f = 0 is the
    logit-normal itself, drawing the same stream."""
    n, f = 400_000, 0.1
    t = times.logit_normal_with_uniform(0.0, 0.8, f).sample(n, torch.Generator().manual_seed(0))
    for a in (0.01, 0.3, 0.9):
        phi = 0.5 * (1 + math.erf(math.log(a / (1 - a)) / 0.8 / math.sqrt(2)))
        assert (t < a).double().mean().item() == pytest.approx((1 - f) * phi + f * a, abs=0.002)
    plain = times.logit_normal_with_uniform(0.0, 0.8, 0.0).sample(64, torch.Generator().manual_seed(1))
    assert torch.equal(plain, times.LogitNormal(0.0, 0.8).sample(64, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="uniform_fraction"):
        times.logit_normal_with_uniform(0.0, 0.8, 1.5)


def test_guidance_interval_sampler_follows_the_official_law():
    """iMF: [t_min, t_max] ~ U[0, 0.5] x U[0.5, 1] (means 1/4, 3/4, variances 1/48) off the ``whole`` rows, [0, 1] on them."""
    n = 200_000
    whole = torch.arange(n) % 2 == 0
    t_min, t_max = guidance.sample_guidance_interval(whole, torch.Generator().manual_seed(0))
    assert (t_min[whole] == 0).all() and (t_max[whole] == 1).all()
    lo, hi = t_min[~whole], t_max[~whole]
    assert 0 <= lo.min() and lo.max() < 0.5 and 0.5 <= hi.min() and hi.max() <= 1
    assert lo.mean().item() == pytest.approx(0.25, abs=0.003) and hi.mean().item() == pytest.approx(0.75, abs=0.003)
    assert lo.var().item() == pytest.approx(1 / 48, rel=0.02) and hi.var().item() == pytest.approx(1 / 48, rel=0.02)
    every = guidance.sample_guidance_interval(torch.ones(4, dtype=torch.bool))
    assert every[0].tolist() == [0.0] * 4 and every[1].tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="bool tensor"):
        guidance.sample_guidance_interval(torch.zeros(4))


def test_adaptive_weight_power_sets_the_estimator():
    """Over a skewed target V (90% near 0, 10% at 10), the stationary point of E[w ||u - V||^2] with the
    detached weight is u = sum w V / sum w: the mean (1.0) for p = 0, near the mode (0) for p = 1."""
    g = torch.Generator().manual_seed(0)
    V = torch.cat([0.1 * torch.randn(900, 1, generator=g, dtype=torch.float64), torch.full((100, 1), 10.0, dtype=torch.float64)])

    def stationary_point(p: float) -> torch.Tensor:
        u = V.mean(0)
        for _ in range(200):  # iteratively reweighted least squares: the fixed point of the weighted mean
            w = losses.adaptive_weight(losses.squared_error(u.expand_as(V), V, losses.Reduce.SUM), p, 1e-2)
            u = (w[:, None] * V).sum(0) / w.sum()
        return u

    for p, expected, tol in ((0.0, V.mean(0), 1e-12), (1.0, torch.zeros(1, dtype=torch.float64), 0.05)):
        u = stationary_point(p).requires_grad_(True)
        losses.adaptively_weighted(losses.squared_error(u.expand_as(V), V, losses.Reduce.SUM), p, 1e-2).mean().backward()
        assert u.grad.abs().max() < 1e-9  # a stationary point of the loss the recipes optimise
        assert torch.allclose(u.detach(), expected, atol=tol), (p, u)


def test_improved_meanflow_loss_power():
    """p = 0 is the plain sum of the two squared errors; p = 2 weighs each by 1/(L + c)^2; p < 0 is refused."""
    V, v, target = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    total, loss_u, loss_v = losses.improved_meanflow_loss(V, v, target, c=0.5, p=0.0)
    assert torch.equal(total, loss_u + loss_v) and torch.equal(total, torch.tensor([6.0]))
    torch.testing.assert_close(losses.improved_meanflow_loss(V, v, target, c=0.5, p=2.0)[0], torch.tensor([4 / 4.5**2 + 2 / 2.5**2]))
    with pytest.raises(ValueError, match="power p >= 0"):
        losses.improved_meanflow_loss(V, v, target, p=-1.0)
    # lambda weighs the v-head's term alone: 4 + 0.1 * 2 at p = 0, and lambda = 0 leaves the v-head without gradient
    torch.testing.assert_close(losses.improved_meanflow_loss(V, v, target, c=0.5, p=0.0, v_weight=0.1)[0], torch.tensor([4.2]))
    v_head = v.clone().requires_grad_(True)
    losses.improved_meanflow_loss(V, v_head, target, p=0.0, v_weight=0.0)[0].sum().backward()
    assert torch.equal(v_head.grad, torch.zeros_like(v))
    with pytest.raises(ValueError, match="v_weight must be >= 0"):
        losses.improved_meanflow_loss(V, v, target, v_weight=-0.5)


def test_diagonal_velocity_generator_follows_the_exact_flow():
    """With the exact velocity of a Gaussian mixture on the diagonal u(z, t, t), the generator is Euler on
    the true ODE: it lands on the RK4 flow map from t = 1 to 0 with a first-order error."""
    from flowcore import data, experiment

    mixture = data.GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.0, 0.5], [1.0, -0.5]]), 0.3 * torch.eye(2).expand(2, 2, 2))
    model = lambda z, t, s, y: mixture.velocity(z, t)  # noqa: E731
    eps = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = mixture.flow_map(eps, torch.ones(256, dtype=torch.float64), torch.zeros(256, dtype=torch.float64))
    errors = []
    for steps in (50, 200):
        (name, generate), = experiment.diagonal_velocity_generator(model, steps).items()
        assert name == f"velocity_euler{steps}"
        errors.append((generate(eps, None) - exact).norm(dim=1).mean().item())
    assert errors[1] < 0.02 and 3.0 < errors[0] / errors[1] < 5.0, errors  # 4x the steps, ~4x less error
