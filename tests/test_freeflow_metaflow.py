"""FreeFlow (data-free flow-map distillation) and Meta Flow Maps (posterior sampling): their targets,
condition sampler and posterior distance against oracles (closed-form Gaussian flow, the exact
Gaussian-mixture posterior, importance sampling), the no-data guarantee of FreeFlow's training, and the
two recipes (smoke, --help, exact --resume, torchrun)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from flowcore import data, experiment, losses, metrics, targets, times
from tests import oracles
from tests.recipe_checks import assert_help_lists, assert_resume_is_exact, assert_runs_under_torchrun, load_recipe
from tests.recipe_checks import read_checkpoint as _checkpoint

ROOT = Path(__file__).resolve().parents[1]
S2 = 0.25  # data variance of the Gaussian oracle
f64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- FreeFlow targets
@pytest.mark.parametrize("t_value", [1.0, 0.7])
def test_freeflow_prediction_target_fixed_point_on_gaussian_flow(t_value):
    """The exact flow map is the fixed point: with v = the exact velocity at the landing point and
    dF/ds by JVP, the target equals F and the squared error vanishes; a wrong dF/ds or a wrong
    landing velocity moves the target by exactly (t - s) * error."""
    g = _gen(0)
    n, d = 64, 3
    z = torch.randn(n, d, generator=g, dtype=f64)
    t = torch.full((n,), t_value, dtype=f64)
    s = t * torch.rand(n, generator=g, dtype=f64)
    F, dF_ds = torch.func.jvp(lambda s_: oracles.average_velocity(z, t, s_, S2), (s,), (torch.ones_like(s),))
    landing = targets.flow_map_step(z, F, t, s)
    torch.testing.assert_close(landing, oracles.flow_map(z, t, s, S2), rtol=1e-12, atol=1e-12)
    target = targets.freeflow_prediction_target(oracles.velocity(landing, s, S2), dF_ds, t, s)
    torch.testing.assert_close(target, F, rtol=1e-10, atol=1e-12)
    assert losses.squared_error(F, target, losses.Reduce.SUM).max() < 1e-20
    wrong = targets.freeflow_prediction_target(oracles.velocity(landing, s, S2), 1.2 * dF_ds, t, s)
    torch.testing.assert_close(wrong - F, (t - s)[:, None] * 0.2 * dF_ds, rtol=1e-9, atol=1e-12)
    assert (wrong - F).abs().max() > 1e-3
    # the residual F - target is the generating-velocity mismatch df/ds - v(f, s) (the paper's gradient view)
    off = targets.freeflow_prediction_target(oracles.velocity(landing, s, S2) + 0.1, dF_ds, t, s)
    torch.testing.assert_close(F - off, torch.full_like(F, -0.1), rtol=0, atol=1e-12)


def test_freeflow_prediction_target_checks_times():
    z = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="s must be <="):
        targets.freeflow_prediction_target(z, z, torch.full((4,), 0.5), torch.full((4,), 0.6))
    with pytest.raises(ValueError, match="dF_ds shape"):
        targets.freeflow_prediction_target(z, torch.zeros(4, 3), torch.ones(4), torch.zeros(4))


def test_freeflow_losses_vanish_for_exact_student_and_teacher():
    """Teacher = exact velocity, student = exact flow map from t = 1: the prediction loss at every s
    and the correction loss (v_N = the velocity of the student's noising marginals, here the data's)
    are zero, and so are their gradients."""
    g = _gen(1)
    n, d = 256, 2
    z = torch.randn(n, d, generator=g, dtype=f64)
    one, zero = torch.ones(n, dtype=f64), torch.zeros(n, dtype=f64)
    F1 = oracles.average_velocity(z, one, zero, S2).requires_grad_(True)
    x_hat = targets.flow_map_step(z, F1, one, zero).detach()
    torch.testing.assert_close(x_hat.var(0), torch.full((d,), S2, dtype=f64), rtol=0.2, atol=0)  # student samples ~ data
    r = torch.rand(n, generator=g, dtype=f64) * 0.98 + 0.01
    z_r = (1 - r)[:, None] * x_hat + r[:, None] * torch.randn(n, d, generator=g, dtype=f64)
    v = oracles.velocity(z_r, r, S2)
    target = targets.freeflow_correction_target(F1, v, v).detach()
    loss = 0.5 * losses.squared_error(F1, target, losses.Reduce.SUM).mean()
    (grad,) = torch.autograd.grad(loss, F1)
    assert loss.item() == 0 and grad.abs().max() == 0


def test_freeflow_correction_gradient_moves_student_marginal_towards_teacher():
    """Student x_hat = a z (so F(z, 1, 0) = (1 - a) z); its noising marginal is the Gaussian flow of
    variance a^2, whose velocity is exact; the teacher is the flow of variance S2. The correction
    gradient in a must point so that descent moves a towards sqrt(S2), from both sides, and vanish at it."""
    g = _gen(2)
    n, d = 20_000, 2
    z = torch.randn(n, d, generator=g, dtype=f64)
    r = torch.rand(n, generator=g, dtype=f64) * 0.9 + 0.05
    noise = torch.randn(n, d, generator=g, dtype=f64)
    grads = {}
    for a_value in (0.3, 0.5, 0.8):
        a = torch.tensor(a_value, dtype=f64, requires_grad=True)
        F1 = (1 - a) * z
        x_hat = (z - F1).detach()
        z_r = (1 - r)[:, None] * x_hat + r[:, None] * noise
        target = targets.freeflow_correction_target(F1, oracles.velocity(z_r, r, a_value**2), oracles.velocity(z_r, r, S2)).detach()
        (grads[a_value],) = torch.autograd.grad(0.5 * losses.squared_error(F1, target, losses.Reduce.SUM).mean(), a)
    assert grads[0.3] < -1e-3 and grads[0.8] > 1e-3  # descent raises a below sqrt(S2) = 0.5 and lowers it above
    assert abs(grads[0.5]) < 1e-12


def test_freeflow_correction_target_checks_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        targets.freeflow_correction_target(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 1))


# ------------------------------------------------------------------------ Meta Flow Maps targets
def _shifted_gaussian_flow(z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, m: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Flow map of data N(m, var I) (m (B, d), var (B,)) on the linear path:
    z_s = (1 - s) m + (sigma_s / sigma_t)(z_t - (1 - t) m), sigma_t^2 = (1 - t)^2 var + t^2."""
    sig = lambda u: torch.sqrt((1 - u) ** 2 * var + u**2)[:, None]  # noqa: E731
    return (1 - s)[:, None] * m + sig(s) / sig(t) * (z - (1 - t)[:, None] * m)


def test_posterior_velocity_is_the_exact_posterior_flow_for_a_gaussian():
    """Data N(0, std^2 I): p(x | z_c) = N(m, var I) with var = 1 / (1/std^2 + ((1 - c)/c)^2) and
    m = var (1 - c) z_c / c^2. The GLASS velocity from the unconditional exact velocity equals the
    time derivative of that posterior's flow; MeanFlow's target with it (the consistency target of
    Meta Flow Maps) returns the exact conditional average velocity, so both losses vanish."""
    std = 0.7
    g = _gen(3)
    n, d = 64, 3
    gauss = data.gaussian(d, std)
    c = torch.rand(n, generator=g, dtype=f64) * 0.95 + 0.05
    z_c = torch.randn(n, d, generator=g, dtype=f64)
    var = 1 / (1 / std**2 + ((1 - c) / c) ** 2)
    m = var[:, None] * ((1 - c) / c**2)[:, None] * z_c
    t = torch.rand(n, generator=g, dtype=f64) * 0.95 + 0.05
    s = t * torch.rand(n, generator=g, dtype=f64)
    z = torch.randn(n, d, generator=g, dtype=f64)

    def field(z_: torch.Tensor, t_: torch.Tensor) -> torch.Tensor:
        z_star, t_star = targets.posterior_query_point(z_, t_, z_c, c)
        return targets.posterior_velocity(z_, t_, z_star, t_star, gauss.velocity(z_star, t_star))

    v = field(z, t)
    _, dz_ds = torch.func.jvp(lambda u: _shifted_gaussian_flow(z, t, u, m, var), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(v, dz_ds, rtol=1e-9, atol=1e-10)
    u_exact = lambda z_, t_: (z_ - _shifted_gaussian_flow(z_, t_, s, m, var)) / (t_ - s)[:, None]  # noqa: E731
    u, du_dt = torch.func.jvp(u_exact, (z, t), (v, torch.ones_like(t)))
    torch.testing.assert_close(targets.meanflow_target(v, t, s, du_dt), u, rtol=1e-8, atol=1e-9)
    # the Lagrangian form (metaflow --consistency lagrangian): d/ds of the exact map equals the GLASS velocity where it lands
    u_s, du_ds = torch.func.jvp(lambda s_: (z - _shifted_gaussian_flow(z, t, s_, m, var)) / (t - s_)[:, None], (s,), (torch.ones_like(s),))
    landing = targets.flow_map_step(z, u_s, t, s)
    torch.testing.assert_close(landing, _shifted_gaussian_flow(z, t, s, m, var), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(targets.freeflow_prediction_target(field(landing, s), du_ds, t, s), u_s, rtol=1e-8, atol=1e-9)
    # a map landing off the flow (by 0.05) is not a fixed point
    assert (targets.freeflow_prediction_target(field(landing + 0.05, s), du_ds, t, s) - u_s).abs().mean() > 1e-2


def test_posterior_velocity_matches_the_mixture_posterior_flow():
    """Anisotropic class-conditional mixture: the GLASS velocity equals the velocity of the exact
    posterior mixture p(x | z_c) (built from ``GaussianMixture.posterior``) at (z, t); c = 1 gives back
    the unconditional velocity."""
    mix = data.class_conditional_mixture()
    g = _gen(4)
    n = 12
    c = torch.rand(n, generator=g, dtype=f64) * 0.8 + 0.15
    z_c = (1 - c)[:, None] * mix.sample(n, g)[0] + c[:, None] * torch.randn(n, 2, generator=g, dtype=f64)
    t = torch.rand(n, generator=g, dtype=f64) * 0.9 + 0.05
    z = torch.randn(n, 2, generator=g, dtype=f64)
    z_star, t_star = targets.posterior_query_point(z, t, z_c, c)
    v = targets.posterior_velocity(z, t, z_star, t_star, mix.velocity(z_star, t_star))
    post = mix.posterior(z_c, c)
    for i in range(n):
        exact = data.GaussianMixture(post.weights[i].clamp_min(1e-300), post.means[i], post.covs[i])
        torch.testing.assert_close(v[i : i + 1], exact.velocity(z[i : i + 1], t[i : i + 1]), rtol=1e-8, atol=1e-9)
    ones = torch.ones(n, dtype=f64)
    z1, t1 = targets.posterior_query_point(z, t, z_c, ones)
    torch.testing.assert_close(z1, z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t1, t, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="t > 0 and c > 0"):
        targets.posterior_query_point(z, t, z_c, torch.zeros(n, dtype=f64))


def test_posterior_query_point_jvp_equals_central_difference():
    """Meta Flow Maps' --query-input feeds (z*, t*)(z, t) to the network inside the differentiated
    function, so dF/dt carries d(z*, t*)/dt: the JVP of the query point along (v, 1) equals fp64
    central differences (relative 1e-7), for c < 1 and for the pure-noise condition c = 1."""
    g = _gen(5)
    n, d = 16, 2
    z_c = torch.randn(n, d, generator=g, dtype=f64)
    t = torch.rand(n, generator=g, dtype=f64) * 0.8 + 0.1
    z, v = torch.randn(n, d, generator=g, dtype=f64), torch.randn(n, d, generator=g, dtype=f64)
    for c in (torch.rand(n, generator=g, dtype=f64) * 0.8 + 0.1, torch.ones(n, dtype=f64)):
        point = lambda z_, t_: targets.posterior_query_point(z_, t_, z_c, c)  # noqa: E731
        _, (dz_star, dt_star) = torch.func.jvp(point, (z, t), (v, torch.ones_like(t)))
        h = 1e-6
        (zp, tp), (zm, tm) = point(z + h * v, t + h), point(z - h * v, t - h)
        torch.testing.assert_close(dz_star, (zp - zm) / (2 * h), rtol=1e-7, atol=1e-8)
        torch.testing.assert_close(dt_star, (tp - tm) / (2 * h), rtol=1e-7, atol=1e-8)
        assert dz_star.abs().max() > 1e-3  # the derivative the JVP carries is not zero


def test_gaussian_denoiser_scalings_are_the_exact_gaussian_posterior():
    """For data N(0, sigma_d^2 I) the exact mixture posterior at (z_t, t) has mean c_skip(t) z_t and
    covariance c_out(t)^2 I, on (0, 1) and at both ends: (1, 0) at t = 0, (0, sigma_d) at t = 1."""
    std, n, d = 0.7, 32, 3
    g = _gen(11)
    gauss = data.gaussian(d, std)
    t = torch.cat([torch.tensor([0.0, 1.0], dtype=f64), torch.rand(n - 2, generator=g, dtype=f64)])
    z = torch.randn(n, d, generator=g, dtype=f64)
    skip, out = targets.gaussian_denoiser_scalings(t, std)
    posterior = gauss.posterior(z, t)
    torch.testing.assert_close(skip[:, None] * z, posterior.mean(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[:, None, None] ** 2 * torch.eye(d, dtype=f64), posterior.covariance(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.stack([skip[:2], out[:2]]), torch.tensor([[1.0, 0.0], [0.0, std]], dtype=f64))
    with pytest.raises(ValueError, match="sigma_data > 0"):
        targets.gaussian_denoiser_scalings(t, 0.0)


def test_preconditioned_flow_map_with_zero_output_is_the_exact_gaussian_posterior_velocity():
    """Meta Flow Maps' --precondition: with G = 0 and sigma_d the data's RMS, the diagonal F(z, t, t) of
    ``preconditioned_posterior_flow_map`` equals the exact posterior velocity of Gaussian data (the GLASS
    velocity of ``posterior_velocity``, itself tested against the closed-form flow above), for c < 1, for
    c = 1, and down to t = 1e-6, where it stays finite rather than growing like 1/t."""
    std, n, d = 0.7, 64, 3
    g = _gen(12)
    gauss = data.gaussian(d, std)
    assert gauss.root_mean_square() == pytest.approx(std, rel=1e-12)
    z_c, z = torch.randn(n, d, generator=g, dtype=f64), torch.randn(n, d, generator=g, dtype=f64)
    t = torch.cat([torch.full((4,), 1e-6, dtype=f64), torch.rand(n - 4, generator=g, dtype=f64) * 0.99 + 0.01])
    for c in (torch.rand(n, generator=g, dtype=f64) * 0.95 + 0.05, torch.ones(n, dtype=f64)):
        z_star, t_star = targets.posterior_query_point(z, t, z_c, c)
        F = targets.preconditioned_posterior_flow_map(z, t, z_star, t_star, torch.zeros_like(z), std)
        exact = targets.posterior_velocity(z, t, z_star, t_star, gauss.velocity(z_star, t_star))
        torch.testing.assert_close(F, exact, rtol=1e-7, atol=1e-7)
        assert F[:4].abs().max() < 10 * (z.abs().max() + z_c.abs().max())
    with pytest.raises(ValueError, match="t > 0"):
        targets.preconditioned_posterior_flow_map(z, torch.zeros(n, dtype=f64), z_star, t_star, z, std)


def test_ring_mixture_root_mean_square_is_the_hand_computed_value():
    """Eight modes on the circle of radius sqrt(2), std 0.1: E||x||^2 / 2 = (2 + 2 * 0.01) / 2 = 1.01."""
    assert data.ring_mixture().root_mean_square() == pytest.approx(math.sqrt(1.01), rel=1e-12)


def test_condition_times_follow_the_official_law():
    n = 200_000
    c = times.sample_condition_times(n, noise_rate=0.1, power=2.0, generator=_gen(5))
    assert c.shape == (n,) and (c > 0).all() and (c <= 1).all()
    noise = c == 1
    assert abs(noise.float().mean().item() - 0.1) < 0.005
    rest = c[~noise]
    assert abs(rest.mean().item() - 2 / 3) < 0.005  # E[1 - U^2] = 2/3
    assert abs((rest < 0.5).float().mean().item() - (1 - math.sqrt(0.5))) < 0.005  # P(1 - U^2 < a) = 1 - sqrt(1 - a)
    with pytest.raises(ValueError, match="noise_rate"):
        times.sample_condition_times(4, noise_rate=1.5)


# ----------------------------------------------------------------- the exact posterior MFM uses
def test_ring_mixture_posterior_matches_importance_sampling_and_its_own_draws():
    """The 8-Gaussian ring's exact p(x | z_t): its mean and covariance equal self-normalised importance
    sampling from the prior (weights N(z; (1 - t) x, t^2 I)), and posterior_sample reproduces them."""
    mix = data.ring_mixture()
    z = torch.tensor([[0.5, 0.4], [-1.0, 0.1], [0.2, -1.3]], dtype=f64)
    t = torch.tensor([0.3, 0.5, 0.8], dtype=f64)
    post = mix.posterior(z, t)
    mean, cov = post.mean(), post.covariance()
    x = mix.sample(400_000, _gen(6))[0]
    for i in range(3):
        logw = -((z[i] - (1 - t[i]) * x) ** 2).sum(1) / (2 * t[i] ** 2)
        w = torch.softmax(logw, 0)
        is_mean = (w[:, None] * x).sum(0)
        is_cov = (w[:, None, None] * (x - is_mean)[:, :, None] * (x - is_mean)[:, None, :]).sum(0)
        torch.testing.assert_close(is_mean, mean[i], rtol=0, atol=0.02)
        torch.testing.assert_close(is_cov, cov[i], rtol=0.05, atol=0.01)
    n = 40_000
    draws = mix.posterior_sample(z, t, n, _gen(7))
    std_err = (torch.diagonal(cov, dim1=1, dim2=2) / n).sqrt()
    assert ((draws.mean(1) - mean).abs() < 5 * std_err).all()
    torch.testing.assert_close(torch.stack([torch.cov(d.T) for d in draws]), cov, rtol=0.05, atol=0.005)


def test_posterior_distance_sits_at_its_floor_for_exact_draws_and_detects_a_wrong_posterior():
    mix = data.ring_mixture()
    z, t = torch.tensor([0.6, 0.3], dtype=f64), torch.tensor(0.6, dtype=f64)
    exact = mix.posterior_sample(z[None], t[None], 1000, _gen(8))[0]
    good = metrics.posterior_distance(metrics.sliced_w2, exact, mix, z, t, seed=1)
    assert 0.5 < good.ratio < 1.6
    prior = mix.sample(1000, _gen(9))[0]  # the unconditional data: a wrong posterior
    bad = metrics.posterior_distance(metrics.sliced_w2, prior, mix, z, t, seed=1)
    assert bad.value > 3 * bad.floor and bad.floor == good.floor
    with pytest.raises(ValueError, match="scalar"):
        metrics.posterior_distance(metrics.sliced_w2, exact, mix, z, t[None])


# ------------------------------------------------------------------------------------ recipes
def _data_loaders_raise(monkeypatch) -> list:
    """Make every data reader raise until experiment.evaluate starts (then restore them)."""

    def boom(*args, **kwargs):
        raise AssertionError("FreeFlow training touched the data")

    patched = [(data, "load_digits"), (data, "_digits_arrays"), (data, "digits_halves"), (data, "checkerboard"),
               (data, "ring_mixture"), (data.Toy2D, "sample"), (data.GaussianMixture, "sample")]
    originals = [(owner, name, getattr(owner, name)) for owner, name in patched]
    for owner, name in patched:
        monkeypatch.setattr(owner, name, boom)
    evaluate = experiment.evaluate
    calls = []

    def evaluate_with_data(*args, **kwargs):
        for owner, name, original in originals:
            monkeypatch.setattr(owner, name, original)
        calls.append(1)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(experiment, "evaluate", evaluate_with_data)
    return calls


@pytest.mark.parametrize("extra", [[], ["--data", "checkerboard", "--no-correction", "--derivative", "jvp"]])
def test_freeflow_training_loads_no_data(extra, tmp_path, monkeypatch):
    calls = _data_loaders_raise(monkeypatch)
    with pytest.raises(AssertionError, match="touched the data"):  # the guard works: the data-based source does read
        experiment.load_source(extra[1] if extra else "digits").batch(2)
    results = load_recipe("freeflow").main(["--smoke", "--out", str(tmp_path), *extra])
    assert calls == [1] and {"1nfe", "teacher_heun50", "floor"} <= results.keys()
    files = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "metrics.json", "config.json", "loss.png", "samples_1nfe.png"} <= files
    metrics_json = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics_json["correction"] is (not extra)
    roles = _checkpoint(tmp_path / "checkpoint.safetensors")[1]["roles"]
    assert ("fake_velocity" in roles) is (not extra)


@pytest.mark.parametrize("extra", [[], ["--derivative", "fd", "--diagonal-target", "data"], ["--derivative", "fused"], ["--prediction", "x", "--query-input"],
                                   ["--precondition", "--derivative", "fd"], ["--consistency", "eulerian"],
                                   ["--consistency", "eulerian", "--derivative", "fd", "--diagonal-target", "data"], ["--consistency", "eulerian", "--precondition"]])
def test_metaflow_smoke_writes_posterior_metrics(extra, tmp_path):
    results = load_recipe("metaflow").main(["--smoke", "--out", str(tmp_path), *extra])
    for k in (1, 2, 4):
        assert math.isfinite(results[f"{k}nfe"]["sw2"])
        for c in (0.25, 0.5, 0.75):
            row = results[f"posterior_c{c:.2f}_{k}nfe"]
            assert math.isfinite(row["sw2"]) and row["sw2_floor"] > 0 and row["energy_floor"] > 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["results"].keys() == results.keys()
    assert written["consistency"] == ("eulerian" if "eulerian" in extra else "lagrangian")
    assert (tmp_path / "samples_posterior_c0.50_0.png").is_file()


@pytest.mark.parametrize("flag", ["--query-input", "--precondition"])
def test_metaflow_refuses_the_query_point_with_forward_differences(flag, tmp_path):
    with pytest.raises(SystemExit, match="--precondition with --consistency eulerian need --derivative jvp"):
        load_recipe("metaflow").main(["--smoke", flag, "--consistency", "eulerian", "--derivative", "fd", "--out", str(tmp_path)])


def test_metaflow_refuses_precondition_with_another_prediction(tmp_path):
    with pytest.raises(SystemExit, match="--precondition sets the output's meaning itself"):
        load_recipe("metaflow").main(["--smoke", "--precondition", "--prediction", "x", "--out", str(tmp_path)])


def test_metaflow_resume_of_a_finished_run_reevaluates_with_more_posterior_points(tmp_path):
    """--posterior-points / --posterior-samples only change the evaluation: a finished run resumes with new values and
    the same weights, and each c's figure then averages over that many conditioning states; a training flag still blocks."""
    recipe = load_recipe("metaflow")
    recipe.main(["--smoke", "--out", str(tmp_path)])
    weights = _checkpoint(tmp_path / "checkpoint.safetensors")[0]
    recipe.main(["--smoke", "--out", str(tmp_path), "--resume", "--posterior-points", "2", "--posterior-samples", "32"])
    after = _checkpoint(tmp_path / "checkpoint.safetensors")[0]
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert (written["posterior_points"], written["posterior_samples"]) == (2, 32)
    assert (tmp_path / "samples_posterior_c0.25_1.png").is_file()
    with pytest.raises(ValueError, match="warmup"):
        recipe.main(["--smoke", "--out", str(tmp_path), "--resume", "--warmup", "0.5"])
    for bad in (["--posterior-samples", "1"], ["--posterior-points", "0"], ["--smoke", "--posterior-samples", "0"]):
        with pytest.raises(SystemExit, match="--posterior-samples must be >= 2 and --posterior-points >= 1"):
            recipe.parse(bad)


def test_metaflow_rejects_data_without_exact_posterior(tmp_path):
    with pytest.raises(SystemExit, match="eight_gaussians"):
        load_recipe("metaflow").main(["--smoke", "--data", "checkerboard", "--out", str(tmp_path)])


@pytest.mark.parametrize("name", ["freeflow", "metaflow"])
def test_help_lists_flags(name):
    assert_help_lists(name, "--smoke", "--resume", "--derivative")


@pytest.mark.parametrize("name", ["freeflow", "metaflow"])
def test_resume_continues_exactly(name, tmp_path):
    assert_resume_is_exact(name, tmp_path)


def test_freeflow_runs_under_torchrun(tmp_path):
    meta = assert_runs_under_torchrun("freeflow", tmp_path)
    assert "fake_velocity" in meta["roles"]


# ------------------------------------------------------------------------- default-run bars (slow)
@pytest.mark.slow
def test_freeflow_default_is_within_1p5x_of_the_teacher(tmp_path):
    results = load_recipe("freeflow").main(["--out", str(tmp_path)])
    assert results["1nfe"]["fd"] <= 1.5 * results["teacher_heun50"]["fd"]


@pytest.mark.slow
def test_metaflow_default_samples_the_posterior(tmp_path):
    results = load_recipe("metaflow").main(["--out", str(tmp_path)])
    assert results["1nfe"]["sw2"] <= 2.0 * results["floor"]["sw2"]
    for c in (0.25, 0.5, 0.75):
        row = results[f"posterior_c{c:.2f}_1nfe"]
        assert row["sw2"] <= 2.0 * row["sw2_floor"], (c, row)
