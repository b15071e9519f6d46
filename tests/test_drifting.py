"""Drifting Models (arXiv 2602.04770): the field of Algorithm 2 against a float64 reference written from
the formula, its exact anti-symmetry and equilibrium, its sampling-noise decay, the broken symmetry of
attraction > 1, the normalisations, the loss gradient, and the recipe (smoke, --help, --resume, torchrun).
Slow bar tests (`pytest -m slow`) run the default recipe and its ablations."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowcore import drifting, losses, targets
from tests.recipe_checks import assert_help_lists, assert_resume_is_exact, assert_runs_under_torchrun, load_recipe, run_env as _env

ROOT = Path(__file__).resolve().parents[1]


def _sets(n=5, p=4, m=6, d=3, seed=0, lead=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n, d, generator=g, dtype=torch.float64)
    a = torch.randn(*lead, p, d, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(*lead, m, d, generator=g, dtype=torch.float64) - 0.3
    return x, a, b


def _reference(x, y_pos, y_neg, tau, exclude_self=False):
    """Algorithm 2 with Python loops in float64: (A_pos, A_neg, V = W+ y+ - W- y-)."""
    x, y_pos, y_neg = x.tolist(), y_pos.tolist(), y_neg.tolist()
    ys = y_pos + y_neg
    n, p, k = len(x), len(y_pos), len(ys)
    masked = lambda i, j: exclude_self and j - p == i  # noqa: E731
    logit = [[-math.dist(x[i], ys[j]) / tau for j in range(k)] for i in range(n)]
    e = [[0.0 if masked(i, j) else math.exp(logit[i][j]) for j in range(k)] for i in range(n)]
    row = [[e[i][j] / sum(e[i]) for j in range(k)] for i in range(n)]
    col = [[e[i][j] / sum(e[r][j] for r in range(n)) for j in range(k)] for i in range(n)]
    a = [[math.sqrt(row[i][j] * col[i][j]) for j in range(k)] for i in range(n)]
    v = []
    for i in range(n):
        s_pos, s_neg = sum(a[i][:p]), sum(a[i][p:])
        v.append([sum(a[i][j] * s_neg * y_pos[j][d] for j in range(p)) - sum(a[i][p + j] * s_pos * y_neg[j][d] for j in range(len(y_neg)))
                  for d in range(len(x[0]))])
    t = lambda z: torch.tensor(z, dtype=torch.float64)  # noqa: E731
    return t([r[:p] for r in a]), t([r[p:] for r in a]), t(v)


# ---------------------------------------------------------------- the field against the formula
def test_affinities_and_field_match_a_float64_reference_on_a_hand_sized_case():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    y_pos = torch.tensor([[0.5, 0.5], [-1.0, 1.0]], dtype=torch.float64)
    y_neg = torch.tensor([[2.0, -1.0], [0.0, 0.5]], dtype=torch.float64)
    for tau in (0.3, 1.0, 4.0):
        a_pos, a_neg = drifting.kernel_affinities(x, y_pos, y_neg, tau)
        ref_pos, ref_neg, ref_v = _reference(x, y_pos, y_neg, tau)
        torch.testing.assert_close(a_pos, ref_pos, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(a_neg, ref_neg, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(drifting.drifting_field(x, y_pos, y_neg, tau), ref_v, rtol=1e-11, atol=1e-13)
    # the doubly normalised A: each entry is the geometric mean of a row- and a column-stochastic matrix
    row_soft = torch.softmax(-torch.cdist(x, torch.cat([y_pos, y_neg])), dim=1)
    col_soft = torch.softmax(-torch.cdist(x, torch.cat([y_pos, y_neg])), dim=0)
    a_pos, a_neg = drifting.kernel_affinities(x, y_pos, y_neg, 1.0)
    torch.testing.assert_close(torch.cat([a_pos, a_neg], 1) ** 2, row_soft * col_soft, rtol=1e-12, atol=0)


def test_self_pairs_are_masked_like_the_reference():
    x, y_pos, _ = _sets(n=4, p=3)
    a_pos, a_neg = drifting.kernel_affinities(x, y_pos, x, 0.8, exclude_self=True)
    ref_pos, ref_neg, ref_v = _reference(x, y_pos, x, 0.8, exclude_self=True)
    assert (torch.diagonal(a_neg) == 0).all()
    torch.testing.assert_close(a_pos, ref_pos, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(a_neg, ref_neg, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(drifting.drifting_field(x, y_pos, x, 0.8, exclude_self=True), ref_v, rtol=1e-11, atol=1e-13)


def test_leading_dims_are_independent_fields():
    x, a, b = _sets(lead=(3,))
    v = drifting.drifting_field(x, a, b, 0.7)
    for k in range(3):
        torch.testing.assert_close(v[k], drifting.drifting_field(x[k], a[k], b[k], 0.7), rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------- anti-symmetry and equilibrium
@pytest.mark.parametrize("tau", [0.05, 0.5, 3.0])
def test_field_is_antisymmetric_in_positives_and_negatives(tau):
    x, a, b = _sets(n=7, p=5, m=9, lead=(2,))
    torch.testing.assert_close(drifting.drifting_field(x, a, b, tau), -drifting.drifting_field(x, b, a, tau), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("tau", [0.05, 0.5, 3.0])
def test_field_vanishes_exactly_when_positives_are_the_negatives(tau):
    x, a, _ = _sets(n=7, p=5)
    for dtype in (torch.float32, torch.float64):
        v = drifting.drifting_field(x.to(dtype), a.to(dtype), a.to(dtype).clone(), tau)
        assert torch.equal(v, torch.zeros_like(v))


def _rms_field_same_distribution(n, seed):
    """RMS of V(x; y+, y- = x) at the data's own points: x, y+ i.i.d. N(0, I_2), tau = 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return drifting.drifting_field(x, y, x, 1.0, exclude_self=True).pow(2).sum(1).mean().sqrt().item()


def test_field_vanishes_up_to_sampling_noise_shrinking_with_n():
    """Same distribution: the field is sampling noise, RMS <= 2 / sqrt(n) (measured 0.6 to 1.5 / sqrt(n)
    over seeds, 1.1 and 0.95 / sqrt(n) on average at n = 256 and 4096), falling about 4x from n = 256 to
    n = 4096; a shift of the data by 1 gives a mean field (0.33) over 4x that bound at n = 1024."""
    rms = {n: sum(_rms_field_same_distribution(n, s) for s in range(3)) / 3 for n in (256, 4096)}
    for n, r in rms.items():
        assert r <= 2.0 / math.sqrt(n), (n, r)
    assert rms[4096] < rms[256] / 2.5
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1024, 2, generator=g, dtype=torch.float64)
    shifted = torch.randn(1024, 2, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0.0], dtype=torch.float64)
    v = drifting.drifting_field(x, shifted, x, 1.0, exclude_self=True)
    assert v[:, 0].mean() > 4 * 2.0 / math.sqrt(1024) and v[:, 0].mean() > 10 * v[:, 1].mean().abs()


# ---------------------------------------------------------------- attraction > 1
def test_attraction_above_one_breaks_the_symmetry():
    x, a, b = _sets(n=7, p=5, m=9)
    tau, scale = 0.7, 1.5
    a_pos, a_neg = drifting.kernel_affinities(x, a, a.clone(), tau)
    w = a_pos * a_neg.sum(1, keepdim=True)
    attraction_only = w @ a - w.sum(1, keepdim=True) * x
    # identical sets: the repulsion cancels the unit attraction, (scale - 1) V+ is left
    torch.testing.assert_close(drifting.drifting_field(x, a, a.clone(), tau, attraction=scale), (scale - 1) * attraction_only, rtol=1e-12, atol=1e-14)
    assert attraction_only.norm() > 0.1
    asym = drifting.drifting_field(x, a, b, tau, attraction=scale) + drifting.drifting_field(x, b, a, tau, attraction=scale)
    assert asym.norm() > 0.1 * drifting.drifting_field(x, a, b, tau).norm()


# ---------------------------------------------------------------- normalisations and the loss
def test_feature_scale_gives_mean_pairwise_distance_sqrt_c():
    x, a, b = _sets(n=6, p=4, m=6, d=5, lead=(2,))
    y = torch.cat([a, b], dim=-2)
    s = drifting.feature_scale(x, y)
    torch.testing.assert_close(torch.cdist(x / s, y / s).mean(), torch.tensor(math.sqrt(5.0), dtype=torch.float64), rtol=1e-13, atol=0)


def test_each_normalised_temperature_has_unit_mean_square_per_dim():
    x, a, _ = _sets(n=8, p=6, d=4)
    for taus in ([0.5], [0.02, 0.05, 0.2]):
        v, lambdas = drifting.normalized_drift(x, a, x, taus, exclude_self=True)
        if len(taus) == 1:
            torch.testing.assert_close(drifting.drift_scale(v), torch.tensor(1.0, dtype=torch.float64), rtol=1e-12, atol=0)
        raw = [drifting.drifting_field(x, a, x, t * 2.0, exclude_self=True) for t in taus]  # tau sqrt(C), C = 4
        torch.testing.assert_close(lambdas, torch.stack([drifting.drift_scale(r) for r in raw]), rtol=1e-12, atol=0)
        torch.testing.assert_close(v, sum(r / lam for r, lam in zip(raw, lambdas)), rtol=1e-12, atol=1e-14)


def test_loss_is_invariant_to_the_feature_scale():
    x, a, _ = _sets(n=8, p=6, d=4, lead=(2,))
    loss, lambdas = drifting.drifting_feature_loss(x, a, x, exclude_self=True)
    loss10, lambdas10 = drifting.drifting_feature_loss(10 * x, 10 * a, 10 * x, exclude_self=True)
    torch.testing.assert_close(loss10, loss, rtol=1e-10, atol=0)
    torch.testing.assert_close(lambdas10, lambdas, rtol=1e-10, atol=0)


def test_loss_gradient_is_minus_two_v_over_n_c_s():
    """L = mean_i mean_d (phi_i/S - sg(phi_i/S + V_i))^2: value mean_i ||V_i||^2 / C, gradient -2 V_i / (N C S)."""
    x, a, _ = _sets(n=6, p=5, d=3, lead=(2,))
    phi = x.clone().requires_grad_(True)
    per_query, _ = drifting.drifting_feature_loss(phi, a, x, (0.05, 0.2), exclude_self=True)
    per_query.mean().backward()
    s = drifting.feature_scale(x, torch.cat([a, x], dim=-2))
    v, _ = drifting.normalized_drift(x / s, a / s, x / s, (0.05, 0.2), exclude_self=True)
    n_total, c = 12, 3
    torch.testing.assert_close(per_query, v.pow(2).mean(-1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(phi.grad, -2 * v / (n_total * c * s), rtol=1e-10, atol=1e-14)


def test_drifting_target_gradient_is_minus_two_v():
    x, a, b = _sets()
    v = drifting.drifting_field(x, a, b, 0.5)
    xg = x.clone().requires_grad_(True)
    losses.squared_error(xg, targets.drifting_target(xg, v).detach(), losses.Reduce.SUM).sum().backward()
    torch.testing.assert_close(xg.grad, -2 * v, rtol=1e-13, atol=1e-15)


def test_bad_inputs_are_named():
    x, a, b = _sets()
    with pytest.raises(ValueError, match="temperature"):
        drifting.drifting_field(x, a, b, 0.0)
    with pytest.raises(ValueError, match="attraction"):
        drifting.drifting_field(x, a, b, 1.0, attraction=-1.0)
    with pytest.raises(ValueError, match="M = N"):
        drifting.drifting_field(x, a, b, 1.0, exclude_self=True)
    with pytest.raises(ValueError, match="feature dim"):
        drifting.drifting_field(x, a[:, :2], b, 1.0)
    with pytest.raises(ValueError, match="detached"):
        drifting.drifting_feature_loss(x, a.requires_grad_(True), b)
    with pytest.raises(ValueError, match="same shape"):
        targets.drifting_target(x, b)


# ---------------------------------------------------------------- the recipe
@pytest.mark.parametrize("extra", [[], ["--features", "raw+encoder"], ["--model", "dit"], ["--data", "checkerboard"],
                                   ["--data", "eight_gaussians", "--attraction", "1.5", "--temperatures", "0.05"]])
def test_recipe_smoke_writes_every_output(extra, tmp_path):
    results = load_recipe("drifting").main(["--smoke", "--out", str(tmp_path), *extra])
    files = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "metrics.json", "config.json", "loss.png", "samples_1nfe.png"} <= files
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(results) == {"floor", "1nfe"} and metrics["results"].keys() == results.keys()
    assert all(v == v for row in results.values() for v in row.values())


def test_recipe_help_lists_flags():
    assert_help_lists("drifting", "--smoke", "--resume", "--out", "--attraction", "--temperatures", "--positives", "--features")


def test_recipe_bad_flags_are_named(tmp_path):
    with pytest.raises(SystemExit, match="--attraction"):
        load_recipe("drifting").main(["--smoke", "--attraction", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="needs --data digits"):
        load_recipe("drifting").main(["--smoke", "--data", "moons", "--features", "raw+encoder", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="per field"):
        load_recipe("drifting").main(["--smoke", "--batch", "10", "--out", str(tmp_path)])


def test_recipe_resume_continues_exactly(tmp_path):
    assert_resume_is_exact("drifting", tmp_path)


def test_recipe_runs_under_torchrun(tmp_path):
    assert_runs_under_torchrun("drifting", tmp_path)


# ---------------------------------------------------------------- bars (pytest -m slow)
def _default_run(tmp_path_factory, label: str, *flags: str) -> dict:
    out = tmp_path_factory.mktemp(label)
    subprocess.run([sys.executable, str(ROOT / "recipes" / "drifting.py"), "--out", str(out), *flags], check=True, env=_env())
    return json.loads((out / "metrics.json").read_text())["results"]


TEACHER_HEUN50_FD = 0.780  # recipes/fm.py default run, heun50 (runs/fm/metrics.json)


@pytest.mark.slow
def test_bar_one_step_digits_and_broken_antisymmetry(tmp_path_factory):
    teacher = ROOT / "runs" / "fm" / "metrics.json"
    teacher_fd = json.loads(teacher.read_text())["results"]["heun50"]["fd"] if teacher.is_file() else TEACHER_HEUN50_FD
    default = _default_run(tmp_path_factory, "drifting")
    assert default["1nfe"]["fd"] <= 1.5 * teacher_fd, default
    assert default["1nfe"]["class_acc"] >= 0.90, default
    broken = _default_run(tmp_path_factory, "drifting_attraction", "--attraction", "1.5")
    assert broken["1nfe"]["fd"] >= 1.2 * default["1nfe"]["fd"], (broken, default)


CHECKERBOARD = ("--steps", "4000", "--batch", "256", "--lr", "1e-3")  # the README's measured 2D command


@pytest.mark.slow
def test_bar_one_step_checkerboard_and_broken_antisymmetry(tmp_path_factory):
    default = _default_run(tmp_path_factory, "drifting_checkerboard", "--data", "checkerboard", *CHECKERBOARD)
    assert default["1nfe"]["sw2"] <= 2.0 * default["floor"]["sw2"], default
    broken = _default_run(tmp_path_factory, "drifting_checkerboard_attraction", "--data", "checkerboard", *CHECKERBOARD, "--attraction", "1.5")
    assert broken["1nfe"]["sw2"] >= 1.2 * default["1nfe"]["sw2"], (broken, default)
