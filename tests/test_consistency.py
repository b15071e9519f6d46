"""Consistency models (CD / CT / iCT) and sCM: primitives against the closed-form Gaussian flow, fp64
finite differences and the papers' formulas; smoke, --help and exact resume of recipes/cm.py and recipes/scm.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from flowcore import derivatives, losses, sampling, targets, times
from flowcore.interpolants import (
    CosinePath, LinearPath, linear_point_of_trigflow, sample_path, trigflow_velocity_from_linear, trigflow_velocity_of_linear_model,
)
from tests import oracles
from tests.recipe_checks import ROOT, assert_help_lists, assert_resume_is_exact, load_recipe
from tests.recipe_checks import read_checkpoint as _checkpoint, run_env as _env

S2 = 0.25  # data variance of the Gaussian oracle
SIGMA_D, SIGMA_MIN = 0.5, 0.002
T_MIN = SIGMA_MIN / (1 + SIGMA_MIN)


def _exact_cm_F(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The network output F* whose consistency function is the exact flow map to t_min (t > t_min)."""
    c_skip, c_out = targets.consistency_skip_out(t, SIGMA_D, SIGMA_MIN)
    return (oracles.flow_map(z, t, torch.full_like(t, T_MIN), S2) - c_skip[:, None] * z) / c_out[:, None]


# ------------------------------------------------------------------ consistency models (EDM skip/out)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_skip_out_boundary_condition_is_exact(dtype):
    t = torch.full((5,), T_MIN, dtype=dtype)
    c_skip, c_out = targets.consistency_skip_out(t, SIGMA_D, SIGMA_MIN)
    assert (c_skip == 1).all() and (c_out == 0).all()
    z, F = torch.randn(5, 3, dtype=dtype), 1e3 * torch.randn(5, 3, dtype=dtype)
    assert torch.equal(targets.consistency_function(z, F, t, SIGMA_D, SIGMA_MIN), z)


def test_skip_out_is_edm_converted():
    """c_skip = (1 - t_min)/(1 - t) c_skip_EDM(sigma), c_out = (1 - t_min) c_out_EDM(sigma), sigma = t/(1 - t); finite at t = 1."""
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    sigma = t / (1 - t)
    edm_skip = SIGMA_D**2 / ((sigma - SIGMA_MIN) ** 2 + SIGMA_D**2)
    edm_out = SIGMA_D * (sigma - SIGMA_MIN) / torch.sqrt(SIGMA_D**2 + sigma**2)
    c_skip, c_out = targets.consistency_skip_out(t, SIGMA_D, SIGMA_MIN)
    torch.testing.assert_close(c_skip, (1 - T_MIN) / (1 - t) * edm_skip, rtol=1e-12, atol=0)
    torch.testing.assert_close(c_out, (1 - T_MIN) * edm_out, rtol=1e-12, atol=0)
    end_skip, end_out = targets.consistency_skip_out(torch.ones(1, dtype=torch.float64), SIGMA_D, SIGMA_MIN)
    assert end_skip.item() == 0 and end_out.item() == pytest.approx(SIGMA_D * (1 - T_MIN), rel=1e-14)
    with pytest.raises(ValueError, match="t_min"):
        targets.consistency_skip_out(torch.zeros(1), SIGMA_D, SIGMA_MIN)


def test_exact_map_is_a_fixed_point_of_the_cd_target_and_the_loss_vanishes():
    """With the exact flow map as F* and the exact ODE between grid neighbours, the target f(z_s, s)
    equals the prediction f(z_t, t) and both distances are 0."""
    grid = times.karras_times(40)
    i = torch.randint(39, (256,), generator=torch.Generator().manual_seed(0))
    t, s = grid[i + 1], grid[i]
    x, eps = 0.5 * torch.randn(256, 3, dtype=torch.float64), torch.randn(256, 3, dtype=torch.float64)
    z_t, _ = sample_path(LinearPath(), x, eps, t)
    z_s = oracles.flow_map(z_t, t, s, S2)
    pred = targets.consistency_function(z_t, _exact_cm_F(z_t, t), t, SIGMA_D, SIGMA_MIN)
    target = targets.consistency_function(z_s, _exact_cm_F(z_s, s), s, SIGMA_D, SIGMA_MIN)
    torch.testing.assert_close(pred, target, rtol=1e-10, atol=1e-12)
    assert losses.squared_error(pred, target, losses.Reduce.MEAN).max() < 1e-20
    assert losses.pseudo_huber(pred, target, 0.00054 * math.sqrt(3)).max() < 1e-9


def test_a_linear_velocity_read_as_edm_output_gives_the_teacher_denoiser():
    """CD starts from the teacher: the exact Gaussian velocity read as EDM's F makes EDM's denoiser
    c_skip^E x_sigma + c_out^E F the posterior mean E[x | z_t] = (1 - t) s2 z / ((1 - t)^2 s2 + t^2) (fp64);
    the consistency function built on it lands on (1 - t_min) E[x | z_t] once sigma >> sigma_min, and on z at t_min."""
    t = torch.linspace(0.02, 80 / 81, 40, dtype=torch.float64)
    z = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    F = targets.edm_output_of_linear_velocity(oracles.velocity(z, t, S2), z, t, SIGMA_D)
    sigma = (t / (1 - t))[:, None]
    denoised = SIGMA_D**2 / (sigma**2 + SIGMA_D**2) * z / (1 - t[:, None]) + sigma * SIGMA_D / torch.sqrt(sigma**2 + SIGMA_D**2) * F
    posterior_mean = (1 - t[:, None]) * S2 * z / ((1 - t[:, None]) ** 2 * S2 + t[:, None] ** 2)
    torch.testing.assert_close(denoised, posterior_mean, rtol=1e-10, atol=1e-12)
    far = t > 0.5  # sigma > 1 = 500 sigma_min
    f = targets.consistency_function(z, F, t, SIGMA_D, SIGMA_MIN)
    torch.testing.assert_close(f[far], (1 - T_MIN) * posterior_mean[far], rtol=0, atol=5e-3)
    t_min = torch.full((40,), T_MIN, dtype=torch.float64)
    F_min = targets.edm_output_of_linear_velocity(oracles.velocity(z, t_min, S2), z, t_min, SIGMA_D)
    assert torch.isfinite(F_min).all() and torch.equal(targets.consistency_function(z, F_min, t_min, SIGMA_D, SIGMA_MIN), z)
    with pytest.raises(ValueError, match=r"t in \(0, 1\)"):
        targets.edm_output_of_linear_velocity(z, z, torch.ones(40, dtype=torch.float64), SIGMA_D)


def test_cd_targets_at_neighbouring_times_agree_to_heun_order():
    """The CD target through one Heun step of the exact velocity agrees with the prediction up to
    Heun's local error O(h^3): halving the gap divides the disagreement by ~8."""
    z_t = torch.randn(64, 3, dtype=torch.float64)
    t = torch.full((64,), 0.6, dtype=torch.float64)
    gaps = []
    for h in (0.08, 0.04, 0.02):
        s = t - h
        z_s = sampling.heun_step(lambda z, tt: oracles.velocity(z, tt, S2), z_t, t, s)
        pred = targets.consistency_function(z_t, _exact_cm_F(z_t, t), t, SIGMA_D, SIGMA_MIN)
        target = targets.consistency_function(z_s, _exact_cm_F(z_s, s), s, SIGMA_D, SIGMA_MIN)
        gaps.append((pred - target).abs().max().item())
    assert gaps[0] > 0
    for coarse, fine in zip(gaps, gaps[1:]):
        assert 6.0 < coarse / fine < 10.0, gaps


def test_consistency_sampling_with_the_exact_map_keeps_the_data_law():
    """Denoise with the exact map, re-noise on the path, denoise again: every step's output has the
    data variance (here the law at t_min), for 1, 2 and 4 steps."""
    n, expect = 40000, oracles.sigma(torch.tensor(T_MIN, dtype=torch.float64), S2).item() ** 2
    eps = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def denoise(z, t):
        return oracles.flow_map(z, t, torch.full_like(t, T_MIN), S2)

    for k in (1, 2, 4):
        x = sampling.consistency_sample(denoise, eps, sampling.consistency_times(k, 1.0, 0.45).double(), LinearPath(),
                                        torch.Generator().manual_seed(k))
        assert x.var().item() == pytest.approx(expect, rel=0.03), k
    with pytest.raises(ValueError, match="decreasing"):
        sampling.consistency_sample(denoise, eps, torch.tensor([0.5, 0.7]), LinearPath())


def test_consistency_times():
    torch.testing.assert_close(sampling.consistency_times(1, 0.9, 0.4), torch.tensor([0.9]))
    torch.testing.assert_close(sampling.consistency_times(2, 0.9, 0.4), torch.tensor([0.9, 0.4]))
    torch.testing.assert_close(sampling.consistency_times(4, 1.0, 0.6), torch.tensor([1.0, 0.6, 0.4, 0.2]))


def test_heun_step_matches_the_exact_flow_to_third_order():
    z = torch.randn(16, 3, dtype=torch.float64)
    t = torch.full((16,), 0.7, dtype=torch.float64)
    err = [(sampling.heun_step(lambda z_, tt: oracles.velocity(z_, tt, S2), z, t, t - h) - oracles.flow_map(z, t, t - h, S2)).abs().max().item()
           for h in (0.1, 0.05)]
    assert 6.0 < err[0] / err[1] < 10.0


# ------------------------------------------------------------------ grids, curricula, weights
def test_karras_times_follow_the_formula():
    grid = times.karras_times(18)
    sigma = times.sigma_of_time(grid)
    assert grid.dtype == torch.float64 and bool((grid[1:] > grid[:-1]).all())
    assert sigma[0].item() == pytest.approx(0.002, rel=1e-12) and sigma[-1].item() == pytest.approx(80.0, rel=1e-12)
    roots = sigma ** (1 / 7)
    torch.testing.assert_close(roots[1:] - roots[:-1], torch.full((17,), (80 ** (1 / 7) - 0.002 ** (1 / 7)) / 17, dtype=torch.float64))


def test_ct_curriculum_follows_its_formula():
    K = 1000
    assert times.ct_discretization(0, K) == 2 and times.ct_discretization(K, K) == 151
    for k in (1, 17, 250, 777):
        assert times.ct_discretization(k, K) == math.ceil(math.sqrt(k / K * (151**2 - 4) + 4) - 1) + 1
    steps = [times.ct_discretization(k, K) for k in range(K + 1)]
    assert all(a <= b for a, b in zip(steps, steps[1:]))
    assert times.ct_target_decay(2) == pytest.approx(0.9)
    assert times.ct_target_decay(151) == pytest.approx(math.exp(2 * math.log(0.9) / 151))


def test_ict_doubling_curriculum_follows_its_formula():
    """K' = floor(8000 / (log2 floor(1280 / 10) + 1)) = 1000: N = 11, 21, 41, ..., 1281."""
    K = 8000
    expected = {0: 11, 999: 11, 1000: 21, 2500: 41, 5999: 321, 6000: 641, 6999: 641, 7000: 1281, 7999: 1281, 8000: 1281}
    assert {k: times.ict_discretization(k, K) for k in expected} == expected
    assert times.ict_discretization(5, 10, s0=2, s1=8) == min(2 * 2 ** (5 // (10 // 3)), 8) + 1


def test_ict_lognormal_pair_proposal():
    grid = times.karras_times(21)
    p = times.ict_pair_probabilities(grid, -1.1, 2.0)
    log_sigma = torch.log(times.sigma_of_time(grid))
    cdf = 0.5 * (1 + torch.erf((log_sigma + 1.1) / (2.0 * math.sqrt(2))))
    torch.testing.assert_close(p, (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0]), rtol=1e-10, atol=1e-12)
    t, s = times.sample_grid_pairs(200000, grid, p, generator=torch.Generator().manual_seed(0))
    assert bool((s < t).all())
    index = torch.searchsorted(grid.float(), s)
    freq = torch.bincount(index, minlength=20).double() / 200000
    assert (freq - p).abs().max() < 4 * math.sqrt(p.max() / 200000)


def test_consistency_gap_weight_is_one_over_the_sigma_gap():
    t, s = torch.tensor([0.5, 0.9, 0.01]), torch.tensor([0.25, 0.5, 0.002])
    expect = 1 / (t.double() / (1 - t.double()) - s.double() / (1 - s.double()))
    torch.testing.assert_close(losses.consistency_gap_weight(t, s).double(), expect, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="s < t"):
        losses.consistency_gap_weight(s, t)


# ------------------------------------------------------------------ sCM / TrigFlow
def _trig_sigma(theta: torch.Tensor) -> torch.Tensor:
    """Std of z = cos(theta) x + sin(theta) n for x ~ N(0, S2 I)."""
    return torch.sqrt(torch.cos(theta) ** 2 * S2 + torch.sin(theta) ** 2)


def _exact_trig_F(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """F* with x_hat = cos z - sin F* the exact flow map to theta = 0: x_hat = z sqrt(S2) / sigma_theta."""
    theta = 0.5 * math.pi * t[:, None]
    return (torch.cos(theta) * z - z * math.sqrt(S2) / _trig_sigma(theta)) / torch.sin(theta)


def _exact_trig_velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dz/dtheta of the Gaussian flow on the cosine path: z sigma'/sigma, sigma' = sin cos (1 - S2) / sigma."""
    theta = 0.5 * math.pi * t[:, None]
    return z * torch.sin(theta) * torch.cos(theta) * (1 - S2) / _trig_sigma(theta) ** 2


def _scm_g(F_fn, z, t, dz_dtheta, warmup=1.0):
    F, dF = derivatives.jvp(F_fn, (z, t), (dz_dtheta, torch.full_like(t, 2 / math.pi)))
    return targets.scm_tangent(z, F, dz_dtheta, dF, t, warmup)


def test_scm_tangent_equals_a_finite_difference_along_the_trajectory_fp64():
    """g = cos(theta) d/dtheta x_hat(z(theta), theta) for any network; here a random smooth one."""
    g0 = torch.Generator().manual_seed(0)
    W, b = torch.randn(3, 3, generator=g0, dtype=torch.float64), torch.randn(3, generator=g0, dtype=torch.float64)

    def F_fn(z, t):
        return torch.tanh(z @ W + b * t[:, None]) + z * t[:, None] ** 2

    x, n = torch.randn(8, 3, generator=g0, dtype=torch.float64), torch.randn(8, 3, generator=g0, dtype=torch.float64)
    theta = torch.rand(8, generator=g0, dtype=torch.float64) * 1.3 + 0.1

    def x_hat(th):
        z = torch.cos(th)[:, None] * x + torch.sin(th)[:, None] * n
        t = th * 2 / math.pi
        return targets.trigflow_denoised(z, F_fn(z, t), t)

    h = 1e-5
    fd = torch.cos(theta)[:, None] * (x_hat(theta + h) - x_hat(theta - h)) / (2 * h)
    z = torch.cos(theta)[:, None] * x + torch.sin(theta)[:, None] * n
    dz = torch.cos(theta)[:, None] * n - torch.sin(theta)[:, None] * x
    g = _scm_g(F_fn, z, theta * 2 / math.pi, dz)
    torch.testing.assert_close(g, fd, rtol=1e-8, atol=1e-9)
    # the FD back end of DirectionalDerivative gives the same tangent to O(step)
    F, dF = derivatives.DirectionalDerivative(derivatives.Derivative.FD, fd_step=1e-6)(F_fn, (z, theta * 2 / math.pi), (dz, torch.full_like(theta, 2 / math.pi)))
    torch.testing.assert_close(targets.scm_tangent(z, F, dz, dF, theta * 2 / math.pi), fd, rtol=1e-4, atol=1e-5)
    # warm-up r scales only the second term: r = 0 leaves -cos^2 (F - dz/dtheta)
    r0 = _scm_g(F_fn, z, theta * 2 / math.pi, dz, warmup=0.0)
    torch.testing.assert_close(r0, -torch.cos(theta)[:, None] ** 2 * (F_fn(z, theta * 2 / math.pi) - dz))


def test_exact_trigflow_map_is_a_fixed_point_of_scd_and_the_loss_vanishes():
    t = torch.linspace(0.05, 0.98, 40, dtype=torch.float64)
    z = torch.randn(40, 3, dtype=torch.float64) * _trig_sigma(0.5 * math.pi * t)[:, None]
    g = _scm_g(_exact_trig_F, z, t, _exact_trig_velocity(z, t))
    assert g.abs().max() < 1e-12
    F = _exact_trig_F(z, t)
    target = F + targets.normalize_tangent(g, 0.2)
    assert losses.squared_error(F, target, losses.Reduce.MEAN).max() < 1e-24


def test_sct_tangent_is_unbiased_for_the_exact_map():
    """sCT's tangent uses the conditional velocity cos(theta) n - sin(theta) x; it is affine in it, so its
    posterior mean given z is sCD's tangent with the exact velocity, 0 for the exact map."""
    m, theta = 200000, torch.tensor(0.9, dtype=torch.float64)
    z0 = torch.tensor([[0.7, -1.2, 0.3]], dtype=torch.float64)
    sig2 = _trig_sigma(theta) ** 2
    mean, std = torch.cos(theta) * S2 * z0 / sig2, torch.sqrt(S2 * torch.sin(theta) ** 2 / sig2)
    x = mean + std * torch.randn(m, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = z0.expand(m, 3).clone()
    n = (z - torch.cos(theta) * x) / torch.sin(theta)
    t = torch.full((m,), (theta * 2 / math.pi).item(), dtype=torch.float64)
    g = _scm_g(_exact_trig_F, z, t, torch.cos(theta) * n - torch.sin(theta) * x)
    assert g.std(0).min() > 0.01  # each draw is far from 0 ...
    assert (g.mean(0).abs() < 5 * g.std(0) / math.sqrt(m)).all()  # ... but the mean is 0


def test_linear_teacher_velocity_converts_to_trigflow():
    """The linear-path point and velocity of the same (x, n) convert to TrigFlow's point and velocity,
    both for the conditional velocity and for the exact Gaussian (marginal) flow."""
    sd = 0.5
    t = torch.linspace(0.02, 0.97, 30, dtype=torch.float64)
    x, n = torch.randn(30, 3, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64)
    z, v_cos = sample_path(CosinePath(), x / sd, n, t)
    z_lin, t_lin = linear_point_of_trigflow(z, t, sd)
    torch.testing.assert_close(z_lin, (1 - t_lin)[:, None] * x + t_lin[:, None] * n)
    torch.testing.assert_close(trigflow_velocity_from_linear(n - x, z_lin, t_lin, t, sd), v_cos * 2 / math.pi)
    # exact marginal flows: data N(0, S2) on the linear path, N(0, S2 / sd^2) on the scaled cosine path
    v_lin = oracles.velocity(z_lin, t_lin, S2)
    theta = 0.5 * math.pi * t[:, None]
    s2 = S2 / sd**2
    sig2 = torch.cos(theta) ** 2 * s2 + torch.sin(theta) ** 2
    torch.testing.assert_close(trigflow_velocity_from_linear(v_lin, z_lin, t_lin, t, sd),
                               z * torch.sin(theta) * torch.cos(theta) * (1 - s2) / sig2, rtol=1e-10, atol=1e-12)


def test_a_linear_velocity_model_read_as_trigflow_is_the_exact_trigflow_field_and_differentiable():
    """trigflow_velocity_of_linear_model on the exact Gaussian linear-path field gives the exact TrigFlow
    field, and its JVP in (z, t) (what sCD takes of a teacher-initialised student) equals a central
    finite difference in fp64."""
    torch.manual_seed(0)
    sd = 0.5
    t = torch.linspace(0.05, 0.95, 20, dtype=torch.float64)
    z = torch.randn(20, 3, dtype=torch.float64)
    exact = lambda z_, t_: trigflow_velocity_of_linear_model(lambda zl, tl: oracles.velocity(zl, tl, S2), z_, t_, sd)  # noqa: E731
    theta, s2 = 0.5 * math.pi * t[:, None], S2 / sd**2
    torch.testing.assert_close(exact(z, t), z * torch.sin(theta) * torch.cos(theta) * (1 - s2) / (torch.cos(theta) ** 2 * s2 + torch.sin(theta) ** 2),
                               rtol=1e-10, atol=1e-12)
    dz, dt = torch.randn_like(z), torch.rand_like(t)
    _, jvp = torch.func.jvp(exact, (z, t), (dz, dt))
    h = 1e-6
    fd = (exact(z + h * dz, t + h * dt) - exact(z - h * dz, t - h * dt)) / (2 * h)
    torch.testing.assert_close(jvp, fd, rtol=1e-7, atol=1e-8)  # fp64 rounding of the difference: ~1e-16 / h = 1e-10


def test_setup_distillation_starts_the_student_from_the_teacher_or_names_the_mismatch(tmp_path):
    from flowcore import experiment

    teacher_dir = tmp_path / "fm"
    load_recipe("fm").main(["--smoke", "--data", "checkerboard", "--out", str(teacher_dir)])
    args = load_recipe("scm").parse(["--smoke", "--data", "checkerboard", "--teacher", str(teacher_dir / "checkpoint.safetensors")])
    run, teacher = experiment.setup_distillation(args, init_from_teacher=True)
    for (name, p), (_, q) in zip(run.model.state_dict().items(), teacher.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    torch.testing.assert_close(run.ema.averaged(args.ema).state_dict(), teacher.state_dict())
    args.width = 2 * args.width
    with pytest.raises(SystemExit, match="width"):
        experiment.setup_distillation(args, init_from_teacher=True)
    run, _ = experiment.setup_distillation(args, init_from_teacher=False)
    assert run.model.config.width == args.width


def test_trigflow_lognormal_times():
    dist = times.TrigFlowLogNormal(-1.0, 1.4, 0.5)
    t = dist.sample(100000, torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1
    sigma = 0.5 * torch.tan(0.5 * math.pi * t.double())  # EDM's sigma = sigma_d tan(theta)
    assert torch.log(sigma).mean().item() == pytest.approx(-1.0, abs=0.02)
    assert torch.log(sigma).std().item() == pytest.approx(1.4, abs=0.02)


def test_normalize_tangent():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(targets.normalize_tangent(g, 1.0), torch.tensor([[0.5, 2 / 3], [0.0, 0.0]]))


# ------------------------------------------------------------------ recipes
@pytest.mark.parametrize("name,extra", [
    ("cm", ["--mode", "cd"]), ("cm", ["--mode", "cd", "--no-teacher-init", "--model", "dit"]), ("cm", ["--mode", "ct"]), ("cm", ["--mode", "ict"]), ("cm", ["--mode", "ict", "--metric", "l2", "--data", "checkerboard"]),
    ("scm", ["--mode", "scd", "--derivative", "jvp"]), ("scm", ["--mode", "sct", "--derivative", "fd"]),
    ("scm", ["--mode", "scd", "--model", "dit", "--derivative", "fused", "--no-teacher-init"]),  # the smoke teacher is an MLP
    ("scm", ["--mode", "sct", "--data", "checkerboard", "--no-tangent-norm", "--tangent-warmup", "0", "--no-adaptive-weight"]),
])
def test_smoke_writes_every_output(name, extra, tmp_path):
    results = load_recipe(name).main(["--smoke", "--out", str(tmp_path), *extra])
    files = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "metrics.json", "config.json", "loss.png", "samples_1nfe.png", "samples_4nfe.png"} <= files
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["results"].keys() == results.keys() and {"floor", "1nfe", "2nfe", "4nfe"} <= results.keys()
    for row in results.values():
        assert all(math.isfinite(v) for v in row.values())
    history = json.loads(_checkpoint(tmp_path / "checkpoint.safetensors")[1]["history"])
    assert all(math.isfinite(v) for v in history["loss"])


@pytest.mark.parametrize("name", ["cm", "scm"])
def test_help_lists_flags(name):
    assert_help_lists(name, "--mode", "--smoke", "--resume")


@pytest.mark.parametrize("name,extra", [("cm", ["--mode", "ct", "--curriculum-steps", "6"]), ("scm", ["--mode", "sct"])])
def test_resume_continues_exactly(name, extra, tmp_path):
    """CT's EMA target network and sCM's learned weight are checkpointed roles: a split run equals a straight one."""
    (a, _), (b, _) = assert_resume_is_exact(name, tmp_path, extra)
    assert any(k.startswith(("module/target/", "module/weight/")) for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------ quality bars of the default runs (pytest -m slow)
def _default_run(tmp_path, recipe: str, *flags: str) -> dict:
    out = tmp_path / recipe
    subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "--out", str(out), *flags], check=True, env=_env())
    return json.loads((out / "metrics.json").read_text())["results"]


@pytest.mark.slow
def test_cd_one_step_close_to_the_teacher_on_digits(tmp_path):
    results = _default_run(tmp_path, "cm")
    assert results["1nfe"]["fd"] <= 1.5 * results["teacher_heun50"]["fd"]
    assert results["1nfe"]["class_acc"] >= 0.90


@pytest.mark.slow
def test_scd_one_and_two_steps_within_1_5x_of_the_teacher_on_digits(tmp_path):
    results = _default_run(tmp_path, "scm")
    teacher_fd = json.loads((ROOT / "runs" / "fm" / "metrics.json").read_text())["results"]["heun50"]["fd"]
    for k in ("1nfe", "2nfe"):
        assert results[k]["fd"] <= 1.5 * teacher_fd, (k, results[k])
        assert results[k]["class_acc"] >= 0.90, (k, results[k])
