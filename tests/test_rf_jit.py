"""Rectified flow (reflow, straightness, one-step distillation) and JiT (x-prediction, CFG interval):
primitives against the closed-form Gaussian flow and exact mixture posteriors, then recipe smoke,
--help and exact resume tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from flowcore import data, guidance, losses, metrics, sampling, targets
from flowcore.interpolants import LinearPath, sample_path
from flowcore.times import LogitNormal, uniform_grid
from tests import oracles
from tests.recipe_checks import assert_help_lists, assert_resume_is_exact, load_recipe, load_script, read_checkpoint, run_env

ROOT = Path(__file__).resolve().parents[1]


_env, _checkpoint = run_env, read_checkpoint


def _eps(n=256, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _straightness_closed_form(eps, s):
    """Data N(0, s^2 I): z_t = eps sigma_t, so S = E||eps||^2 int_0^1 (1 - s - sigma_t')^2 dt = E||eps||^2 s (2 - pi/2)."""
    return eps.square().sum(1).mean().item() * s * (2 - math.pi / 2)


# ---------------------------------------------------------------- straightness
@pytest.mark.parametrize("s", [0.3, 1.0, 2.0])
def test_straightness_of_gaussian_flow_matches_closed_form(s):
    """Heun trajectory + trapezoid rule: second-order convergence to the closed form."""
    eps = _eps()
    exact = _straightness_closed_form(eps, s)
    err200, err400 = (abs(metrics.straightness(lambda z, t: oracles.velocity(z, t, s * s), eps, n) / exact - 1) for n in (200, 400))
    assert err400 < 5e-5 and 3.5 < err200 / err400 < 4.5


def test_straightness_closed_form_against_quadrature():
    """The closed form s (2 - pi/2) of int_0^1 (1 - s - sigma_t')^2 dt, checked by fp64 quadrature of
    sigma_t' = (t - (1 - t) s^2) / sigma_t. It is 0.429 at s = 1: the Gaussian flow is NOT straight
    when data and noise have the same std (the marginals shrink in between); only s -> 0 is straight."""
    t = torch.linspace(0, 1, 200001, dtype=torch.float64)
    for s in (0.1, 0.5, 1.0, 3.0):
        dsigma = (t - (1 - t) * s * s) / oracles.sigma(t, s * s)
        integral = torch.trapezoid((1 - s - dsigma) ** 2, t).item()
        assert integral == pytest.approx(s * (2 - math.pi / 2), rel=1e-6)


def test_straightness_vanishes_for_straight_fields_only():
    eps = _eps()
    assert metrics.straightness(lambda z, t: 0.7 * z / (0.3 + 0.7 * t)[:, None], eps, 16) == pytest.approx(0.0, abs=1e-20)
    assert metrics.straightness(lambda z, t: oracles.velocity(z, t, 1.0), eps, 64) > 0.4 * eps.shape[1]
    with pytest.raises(ValueError, match="steps"):
        metrics.straightness(lambda z, t: z, eps, 0)


# ---------------------------------------------------------------- reflow pairs and distillation targets
def test_reflow_of_gaussian_flow_is_straight_and_its_one_step_map_is_exact():
    s = 0.5
    eps = _eps(512)
    x, e = sampling.reflow_pairs(lambda z, t: oracles.velocity(z, t, s * s), eps, uniform_grid(400).double())
    assert e is eps
    exact = oracles.flow_map(eps, torch.ones(512, dtype=torch.float64), torch.zeros(512, dtype=torch.float64), s * s)
    torch.testing.assert_close(x, exact, rtol=0, atol=5e-5)  # x = s eps (Heun's last step is Euler: O(h^2))
    # Reflow target on the pairs is eps - x; on this coupling z_t = ((1 - t) s + t) eps, so the reflowed
    # field E[eps - x | z_t] = (1 - s) z / ((1 - t) s + t) is straight (S: 0.43 s E||eps||^2 -> 0).
    t = torch.rand(512, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z, v = sample_path(LinearPath(), x, eps, t)
    torch.testing.assert_close(targets.flow_matching_target(v), eps - x)
    reflowed = lambda z, t: (1 - s) * z / ((1 - t) * s + t)[:, None]
    torch.testing.assert_close(reflowed(z, t), eps - x, rtol=0, atol=5e-5)
    assert metrics.straightness(lambda z, t: oracles.velocity(z, t, s * s), eps, 100) == pytest.approx(_straightness_closed_form(eps, s), rel=1e-3)
    assert metrics.straightness(reflowed, eps, 100) < 1e-20
    torch.testing.assert_close(sampling.euler(reflowed, eps, uniform_grid(1).double()), exact, rtol=0, atol=1e-12)
    # One-step distillation target (eps - x) equals the exact average velocity u(eps, 1, 0): zero loss.
    one, zero = torch.ones(512, dtype=torch.float64), torch.zeros(512, dtype=torch.float64)
    target = targets.trajectory_average_velocity(eps, x, one, zero)
    exact_u = oracles.average_velocity(eps, one, zero, s * s)
    assert losses.squared_error(exact_u, target, losses.Reduce.SUM).max().item() < 1e-8
    assert losses.squared_error(oracles.velocity(eps, one, s * s), target, losses.Reduce.SUM).mean().item() > 0.1  # v(eps, 1) is not the jump


def test_trajectory_average_velocity_on_exact_flow_map_and_checks():
    z = _eps(64)
    g = torch.Generator().manual_seed(2)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.9 + 0.1
    s = t * torch.rand(64, generator=g, dtype=torch.float64) * 0.9
    z_s = oracles.flow_map(z, t, s, 0.25)
    torch.testing.assert_close(targets.trajectory_average_velocity(z, z_s, t, s), oracles.average_velocity(z, t, s, 0.25))
    with pytest.raises(ValueError, match="s < t"):
        targets.trajectory_average_velocity(z, z_s, t, t)
    with pytest.raises(ValueError, match="s must be <= t"):
        targets.trajectory_average_velocity(z, z_s, s, t)


# ---------------------------------------------------------------- CFG interval
def _mixture_fn(mix):
    """fn(z, t, s, y): the exact conditional velocity, unconditional for y = null (3)."""
    def fn(z, t, s, y):
        null = y == 3
        out = mix.velocity(z, t)
        if (~null).any():
            out[~null] = mix.velocity(z[~null], t[~null], y[~null])
        return out
    return fn


def test_guided_in_interval_full_empty_and_partial():
    mix = data.class_conditional_mixture()
    fn = _mixture_fn(mix)
    eps = _eps(128, 2)
    y = torch.arange(128) % 3
    grid = uniform_grid(20).double()
    heun = lambda f: sampling.heun(sampling.velocity_of(f), eps, grid)
    full = heun(guidance.guided_in_interval(fn, y, 2.0, 3, 0.0, 1.0))
    torch.testing.assert_close(full, heun(guidance.guided(fn, y, 2.0, 3)), rtol=0, atol=1e-12)
    empty = heun(guidance.guided_in_interval(fn, y, 2.0, 3, 1.0, 0.0))
    torch.testing.assert_close(empty, heun(lambda z, t, s: fn(z, t, s, y)), rtol=0, atol=1e-12)
    assert (full - empty).abs().max() > 1e-2
    # partial: guided for t <= 0.5, conditional above
    cond, guided = (lambda z, t, s: fn(z, t, s, y)), guidance.guided(fn, y, 2.0, 3)
    manual = lambda z, t, s: torch.where((t <= 0.5)[:, None], guided(z, t, s), cond(z, t, s))
    torch.testing.assert_close(heun(guidance.guided_in_interval(fn, y, 2.0, 3, 0.0, 0.5)), heun(manual), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="interval"):
        guidance.guided_in_interval(fn, y, 2.0, 3, -0.1, 0.9)


# ---------------------------------------------------------------- JiT conversions
def test_x_and_eps_prediction_give_the_exact_velocity_from_exact_posterior_means():
    mix = data.class_conditional_mixture()
    g = torch.Generator().manual_seed(3)
    n = 200
    z = torch.randn(n, 2, generator=g, dtype=torch.float64) * 1.5
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.85 + 0.075  # inside both clips
    x_mean = mix.posterior(z, t).mean()
    eps_mean = (z - (1 - t)[:, None] * x_mean) / t[:, None]
    v = mix.velocity(z, t)
    torch.testing.assert_close(targets.velocity_from_x_prediction(z, x_mean, t, 0.05), v, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(targets.velocity_from_eps_prediction(z, eps_mean, t, 0.05), v, rtol=1e-9, atol=1e-9)
    for prediction, out in ((targets.Prediction.X, x_mean), (targets.Prediction.EPS, eps_mean), (targets.Prediction.V, v)):
        torch.testing.assert_close(targets.velocity_from_prediction(prediction, z, out, t), v, rtol=1e-9, atol=1e-9)
    with pytest.raises(TypeError, match="Prediction"):
        targets.velocity_from_prediction("x", z, x_mean, t)
    # a network whose output is the exact posterior mean, read through velocity_network, is the exact velocity field
    exact_x = lambda z_, t_, s_, *rest: mix.posterior(z_, t_).mean()  # noqa: E731
    torch.testing.assert_close(targets.velocity_network(exact_x, "x")(z, t, t, None), v, rtol=1e-9, atol=1e-9)
    # two heads (iMF's u and v) are read head by head: the posterior mean gives the field, twice it (z - 2 x)/t
    two_heads = lambda z_, t_, s_, *rest: (exact_x(z_, t_, s_), 2 * exact_x(z_, t_, s_))  # noqa: E731
    u, v_doubled = targets.velocity_network(two_heads, "x")(z, t, t, None)
    torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(v_doubled, (z - 2 * x_mean) / t[:, None], rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="Prediction"):
        targets.velocity_network(exact_x, "w")
    # below the clip the x-prediction velocity is scaled by t / t_floor (JiT's max(1 - t, t_eps))
    t_small = torch.full((n,), 0.01, dtype=torch.float64)
    x_small = mix.posterior(z, t_small).mean()
    torch.testing.assert_close(targets.velocity_from_x_prediction(z, x_small, t_small, 0.05), mix.velocity(z, t_small) * 0.01 / 0.05)
    for prediction in (targets.Prediction.X, targets.Prediction.EPS):
        for floor in (0.0, -0.1, 1.5):
            with pytest.raises(ValueError, match="t_floor"):
                targets.velocity_from_prediction(prediction, z, x_mean, t, floor)


def test_jit_time_distribution_is_the_flipped_paper_logit_normal():
    """JiT: t_JiT ~ sigmoid(N(-0.8, 0.8)) with data at t_JiT = 1; flowcore t = 1 - t_JiT ~ LogitNormal(+0.8, 0.8)."""
    args = load_recipe("jit").parse(["--smoke"])
    ours = LogitNormal(args.p_mean, args.p_std).sample(200000, torch.Generator().manual_seed(0))
    paper = 1 - torch.sigmoid(-0.8 + 0.8 * torch.randn(200000, generator=torch.Generator().manual_seed(1)))
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    torch.testing.assert_close(ours.quantile(q), paper.quantile(q), rtol=0, atol=5e-3)
    assert ours.mean() > 0.6  # biased to the noise end in flowcore time


# ---------------------------------------------------------------- recipes
@pytest.mark.parametrize("name,extra", [
    ("rectified_flow", []), ("rectified_flow", ["--data", "checkerboard", "--rounds", "2"]),
    ("jit", []), ("jit", ["--prediction", "v"]), ("jit", ["--prediction", "eps", "--model", "mlp"]),
])
def test_smoke_writes_every_output(name, extra, tmp_path):
    results = load_recipe(name).main(["--smoke", "--out", str(tmp_path), *extra])
    files = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "metrics.json", "config.json", "loss.png"} <= files
    metrics_json = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics_json["results"].keys() == results.keys() and "floor" in results
    for row in results.values():
        assert row.get("finite", True) and all(v == v for v in row.values())
    if name == "rectified_flow":
        rounds = metrics_json["rounds"]
        n_rounds = 3 if "--rounds" in extra else 2
        assert [r["round"] for r in rounds] == [*range(n_rounds), f"distill{n_rounds - 1}"]
        assert all(r["straightness"] >= 0 and r["error_euler1"] >= 0 for r in rounds[:-1])
        assert {f"round{k}_euler1" for k in range(n_rounds)} | {"distill_1nfe"} <= results.keys()


@pytest.mark.parametrize("name", ["rectified_flow", "jit"])
def test_help_lists_flags(name):
    assert_help_lists(name, "--smoke", "--resume", "--out")


def _same_checkpoints(a_path, b_path):
    a, meta_a = _checkpoint(a_path)
    b, meta_b = _checkpoint(b_path)
    assert json.loads(meta_a["history"]) == json.loads(meta_b["history"])
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key


def test_rectified_flow_resume_continues_exactly(tmp_path):
    """Straight run (reflow 6 steps, distill 6) == run with 3/3 then --resume with 6/6: the reflow phase
    continues from step 3, the distillation (whose checkpoint came from a different reflow model) restarts."""
    recipe = load_recipe("rectified_flow")
    recipe.main(["--smoke", "--steps", "6", "--distill-steps", "6", "--out", str(tmp_path / "straight")])
    recipe.main(["--smoke", "--steps", "3", "--distill-steps", "3", "--out", str(tmp_path / "split")])
    recipe.main(["--smoke", "--steps", "6", "--distill-steps", "6", "--resume", "--out", str(tmp_path / "split")])
    _same_checkpoints(tmp_path / "straight" / "reflow1" / "checkpoint.safetensors", tmp_path / "split" / "reflow1" / "checkpoint.safetensors")
    _same_checkpoints(tmp_path / "straight" / "checkpoint.safetensors", tmp_path / "split" / "checkpoint.safetensors")


def test_jit_resume_continues_exactly(tmp_path):
    assert_resume_is_exact("jit", tmp_path)


def test_bad_flags_are_named(tmp_path):
    with pytest.raises(SystemExit, match="--data digits"):
        load_recipe("jit").main(["--smoke", "--data", "checkerboard", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--pairs"):
        load_recipe("rectified_flow").main(["--smoke", "--rounds", "-1", "--out", str(tmp_path)])


# ---------------------------------------------------------------- default runs (slow)
@pytest.mark.slow
def test_rectified_flow_default_reflow_lowers_few_step_error(tmp_path):
    load_recipe("rectified_flow").main(["--out", str(tmp_path)])
    rounds = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert rounds[1]["error_euler1"] < rounds[0]["error_euler1"] and rounds[1]["straightness"] < rounds[0]["straightness"]


@pytest.mark.slow
def test_jit_default_meets_teacher_bar(tmp_path):
    """The README's bar: the better of CFG 1.5 and no CFG at 50 Heun steps within 1.2x of the FM teacher's 0.780
    (measured with the default --lr-decay 0.3: 1.22 with CFG, 0.841 without)."""
    results = load_recipe("jit").main(["--out", str(tmp_path)])
    assert min(results["heun50"]["fd"], results["heun50_nocfg"]["fd"]) <= 1.2 * 0.780


# ---------------------------------------------------------------- JiT's embedding-dimension toy (scripts/jit_embedding_dimension.py)
def test_embedding_is_orthonormal_and_the_off_plane_norm_measures_the_rest():
    script = load_script("jit_embedding_dimension")
    P = script.orthonormal_embedding(64, torch.Generator().manual_seed(0))
    torch.testing.assert_close(P.T @ P, torch.eye(2), rtol=0, atol=1e-6)
    x2 = torch.randn(100, 2)
    assert script.off_plane_norm(x2 @ P.T, P) < 1e-5
    off = torch.randn(100, 64)
    off = off - (off @ P) @ P.T
    assert abs(script.off_plane_norm(x2 @ P.T + off, P) - off.norm(dim=1).mean().item()) < 1e-4
    with pytest.raises(ValueError, match="embedding dimension"):
        script.orthonormal_embedding(1, torch.Generator())


def test_embedding_script_smoke_writes_the_table(tmp_path):
    script = load_script("jit_embedding_dimension")
    results = script.main(["--dims", "2", "8", "--steps", "3", "--ode-steps", "2", "--eval-samples", "64", "--width", "16", "--out", str(tmp_path)])
    assert set(results) == {2, 8} and set(results[8]) == {"x", "eps", "v"}
    assert (tmp_path / "table.md").read_text().count("\n") == 4
    assert json.loads((tmp_path / "results.json").read_text())["config"]["predictions"] == ["x", "eps", "v"]
    with pytest.raises(SystemExit):
        script.parse(["--dims", "1"])


@pytest.mark.slow
def test_x_prediction_survives_a_high_embedding_dimension_where_eps_and_v_fail(tmp_path):
    """JiT's claim at toy scale (default script settings: D = 2, 32, 512, MLP width 128). At D = 512 the samples of
    eps- and v-prediction lie far off the data plane (measured off-plane norms 1026 and 19.6, data norm ~1.4) while
    x-prediction's stay on it (0.39, most of it the t-floor clip of the last sampling steps); the in-plane sliced
    W2 of x-prediction grows from D = 2 to 512 no more than the others' (measured 2.1x; eps 740x, v 4.0x)."""
    results = load_script("jit_embedding_dimension").main(["--out", str(tmp_path)])
    growth = {p: results[512][p].get("sw2", math.inf) / results[2][p]["sw2"] for p in ("x", "eps", "v")}
    off = {p: results[512][p].get("off_plane", math.inf) for p in ("x", "eps", "v")}
    assert off["x"] < 1.0 and min(off["eps"], off["v"]) > 10 * off["x"]
    assert growth["x"] <= min(growth["eps"], growth["v"])
