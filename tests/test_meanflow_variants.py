"""MeanFlow variants: alpha-Flow's target and curriculum, UAIMF's weights and time curriculum (against
the closed-form Gaussian flow, fp64 limits and their equations), and the alphaflow / uaimf / imf recipes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowcore import derivatives, losses, targets, times
from flowcore.times import EasyToHardCurriculum, LogitNormal, SigmoidCurriculum
from tests import oracles
from tests.recipe_checks import (assert_help_lists, assert_resume_is_exact, assert_runs_under_torchrun, load_recipe, mean_fd_over_draws,
                                 random_fp64_digits_model, read_checkpoint, run_env)

ROOT = Path(__file__).resolve().parents[1]
S2 = 0.25  # data variance of the Gaussian oracle
RECIPES = ["alphaflow", "uaimf", "imf"]
UAIMF_LOSS_DEFAULTS = ["--p", "0.5", "--lr-decay", "0.3", "--omega", "1", "--kappa", "0"]
"""uaimf.py's loss and schedule defaults, spelled out for the MeanFlow runs it is compared with."""
ALPHAFLOW_LOSS_DEFAULTS = UAIMF_LOSS_DEFAULTS
"""alphaflow.py's loss and schedule defaults that differ from meanflow.py's, the same as uaimf.py's."""


def _pairs(n=64, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    a = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    b = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return z, torch.maximum(a, b), torch.minimum(a, b)


# ---------------------------------------------------------------- alpha-Flow target
def test_alphaflow_at_alpha_one_is_trajectory_flow_matching():
    z, t, s = _pairs()
    v, junk = torch.randn_like(z), torch.randn_like(z)
    s = torch.where(torch.arange(len(t)) % 4 == 0, t, s)  # some flow-matching rows
    torch.testing.assert_close(targets.alphaflow_target(v, junk, t, s, 1.0), v, rtol=0, atol=0)
    z_mid, t_mid = targets.alphaflow_intermediate(z, v, t, s, 1.0)
    torch.testing.assert_close(t_mid, s)
    torch.testing.assert_close(z_mid, z - (t - s)[:, None] * v)
    # rows with s = t regress v whatever alpha is
    eq = t == s
    out = targets.alphaflow_target(v, junk, t, s, 0.3)
    torch.testing.assert_close(out[eq], v[eq], rtol=0, atol=0)
    torch.testing.assert_close(out[~eq], 0.3 * v[~eq] + 0.7 * junk[~eq])


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.9])
def test_alphaflow_exact_map_is_a_fixed_point(alpha):
    """With the exact average velocity over [t - dt, t] as the step velocity, the Euler step lands on the
    exact flow and the target is the semigroup identity: the exact map is returned and the loss vanishes."""
    z, t, s = _pairs()
    t_mid = t - alpha * (t - s)
    v_step = oracles.average_velocity(z, t, t_mid, S2)
    z_mid, t_mid2 = targets.alphaflow_intermediate(z, v_step, t, s, alpha)
    torch.testing.assert_close(t_mid2, t_mid, rtol=0, atol=1e-15)
    torch.testing.assert_close(z_mid, oracles.flow_map(z, t, t_mid, S2), rtol=1e-12, atol=1e-12)
    target = targets.alphaflow_target(v_step, oracles.average_velocity(z_mid, t_mid, s, S2), t, s, alpha)
    exact = oracles.average_velocity(z, t, s, S2)
    torch.testing.assert_close(target, exact, rtol=1e-11, atol=1e-11)
    assert losses.squared_error(exact, target, losses.Reduce.SUM).max() < 1e-20


def test_alphaflow_target_with_the_instantaneous_velocity_errs_at_second_order():
    """Training steps along v(z, t), not the average velocity: the target then misses the exact map by
    O(alpha^2 (t - s)^2), so halving alpha quarters the error."""
    z, t, s = _pairs()
    exact = oracles.average_velocity(z, t, s, S2)
    v = oracles.velocity(z, t, S2)

    def error(alpha):
        z_mid, t_mid = targets.alphaflow_intermediate(z, v, t, s, alpha)
        target = targets.alphaflow_target(v, oracles.average_velocity(z_mid, t_mid, s, S2), t, s, alpha)
        return (target - exact).norm().item()

    errors = [error(a) for a in (0.2, 0.1, 0.05, 0.025)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(1.85 < o < 2.15 for o in orders), orders


class _TinyFlowMap(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d + 2, 32), torch.nn.Tanh(), torch.nn.Linear(32, d))

    def forward(self, z, t, s):
        return self.net(torch.cat([z, t[:, None], s[:, None]], dim=1))


def _grad(model, loss):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_alphaflow_gradient_tends_to_meanflow_gradient_as_alpha_vanishes():
    """grad (1/alpha) 1/2 ||u - sg u_tgt^alpha||^2 -> grad 1/2 ||u - sg(v - (t - s) du/dt)||^2, the gap
    shrinking linearly in alpha (fp64)."""
    torch.manual_seed(0)
    model = _TinyFlowMap(3).double()
    z, t, s = _pairs(n=32)
    v = torch.randn_like(z)
    u, du_dt = derivatives.jvp(lambda z_, t_: model(z_, t_, s), (z, t), (v, torch.ones_like(t)))
    g_mf = _grad(model, 0.5 * losses.squared_error(u, targets.meanflow_target(v, t, s, du_dt).detach(), losses.Reduce.SUM).mean())

    def gap(alpha):
        z_mid, t_mid = targets.alphaflow_intermediate(z, v, t, s, alpha)
        with torch.no_grad():
            u_tgt = targets.alphaflow_target(v, model(z_mid, t_mid, s), t, s, alpha)
        loss = 0.5 / alpha * losses.squared_error(model(z, t, s), u_tgt, losses.Reduce.SUM).mean()
        return ((_grad(model, loss) - g_mf).norm() / g_mf.norm()).item()

    gaps = [gap(a) for a in (1e-1, 1e-2, 1e-3, 1e-4)]
    assert gaps[-1] < 1e-3, gaps
    for a, b in zip(gaps, gaps[1:]):
        assert 7 < a / b < 13, gaps  # first order: one decade of alpha, one decade of the gap


def test_alphaflow_rejects_bad_alpha_and_times():
    z, t, s = _pairs()
    with pytest.raises(ValueError, match="alpha"):
        targets.alphaflow_target(z, z, t, s, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        targets.alphaflow_intermediate(z, z, t, s, 1.5)
    with pytest.raises(ValueError, match="s must be <="):
        targets.alphaflow_target(z, z, s, t, 0.5)


# ---------------------------------------------------------------- alpha curriculum
def test_sigmoid_curriculum_follows_its_equation():
    sched = SigmoidCurriculum(200, 600)  # midpoint 400, span 400, gamma 25, clamp 0.005
    sig = lambda x: 1 / (1 + math.exp(-x))
    for step in (350, 380, 400, 420, 450):
        assert sched(step) == pytest.approx(1 - sig(25 * (step - 400) / 400), rel=1e-12)
    assert sched(400) == pytest.approx(0.5)
    assert sched(0) == 1.0 and sched(199) == 1.0 and sched(601) == 0.0 and sched(10_000) == 0.0
    # snapping: raw alpha > 0.995  <=>  (k - 400)/400 < -ln(199)/25
    edge = 400 - 400 * math.log(199) / 25
    assert sched(math.floor(edge)) == 1.0 and sched(math.ceil(edge)) < 1.0
    assert sched(math.ceil(800 - edge)) == 0.0 and sched(math.floor(800 - edge)) > 0.0
    values = [sched(k) for k in range(0, 800, 7)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    rising = SigmoidCurriculum(0, 100, initial=0.0, final=1.0, clamp=0.0)
    assert rising(50) == pytest.approx(0.5) and rising(75) == pytest.approx(sig(6.25))
    for bad in (dict(start=5, end=5), dict(start=0, end=10, initial=2.0), dict(start=0, end=10, clamp=0.6)):
        with pytest.raises(ValueError):
            SigmoidCurriculum(**bad)


# ---------------------------------------------------------------- UAIMF weights and curriculum
def test_progressive_gap_weight_follows_its_equation():
    gap = torch.tensor([0.0, 0.25, 0.5, 1.0])
    lam = 2.0
    for remaining in (1.0, 0.5, 0.2, 0.0):
        expect = torch.tensor([1 - remaining + lam * remaining * (1 - g) for g in gap.tolist()])
        torch.testing.assert_close(losses.progressive_gap_weight(gap, remaining, lam), expect)
    torch.testing.assert_close(losses.progressive_gap_weight(gap, 1.0, lam), torch.tensor([2.0, 1.5, 1.0, 0.0]))
    torch.testing.assert_close(losses.progressive_gap_weight(gap, 0.0, lam), torch.ones(4))
    t, s = times.sample_pairs(4096, LogitNormal(-0.4, 1.0), generator=torch.Generator().manual_seed(1))
    lam = losses.gap_weight_normalizer(t - s)
    assert losses.progressive_gap_weight(t - s, 1.0, lam).mean().item() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError):
        losses.progressive_gap_weight(gap, 1.5, lam)
    with pytest.raises(ValueError):
        losses.progressive_gap_weight(-gap - 0.1, 0.5, lam)


def test_min_snr_velocity_weight_is_min_snr_on_the_x_loss():
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    gamma = 5.0
    snr = ((1 - t) / t) ** 2
    w = losses.min_snr_velocity_weight(t, gamma)
    torch.testing.assert_close(w, t**2 * torch.clamp(snr, max=gamma))
    torch.testing.assert_close(w, (1 - t) ** 2 * torch.clamp(snr, max=gamma) / snr)  # eps-space form
    # w ||v_hat - v||^2 equals min(SNR, gamma) ||x_hat - x||^2 with x_hat = z - t v_hat on the linear path
    g = torch.Generator().manual_seed(0)
    x, eps, v_hat = (torch.randn(49, 4, generator=g, dtype=torch.float64) for _ in range(3))
    z, v = (1 - t)[:, None] * x + t[:, None] * eps, eps - x
    x_loss = ((z - t[:, None] * v_hat - x) ** 2).sum(1)
    torch.testing.assert_close(w * ((v_hat - v) ** 2).sum(1), torch.clamp(snr, max=gamma) * x_loss)
    assert w.max() <= 1.0 and abs(t[w.argmax()].item() - 1 / (1 + math.sqrt(gamma))) < 0.02


def test_weights_carry_no_gradient():
    t = torch.rand(16, dtype=torch.float64).requires_grad_()
    gap = (0.5 * t).detach().requires_grad_()
    assert not losses.min_snr_velocity_weight(t).requires_grad
    assert not losses.progressive_gap_weight(gap, 0.5, 2.0).requires_grad
    # the weighted loss's gradient is the weight times the loss gradient
    pred = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)
    per = losses.squared_error(pred, torch.zeros(16, 3, dtype=torch.float64), losses.Reduce.SUM)
    w = losses.min_snr_velocity_weight(t)
    (grad,) = torch.autograd.grad((w * per).sum(), pred)
    torch.testing.assert_close(grad, 2 * w.detach()[:, None] * pred.detach())


def test_easy_to_hard_curriculum_opens_bins_from_noise_to_data():
    base = LogitNormal(-0.4, 1.0)
    cur = EasyToHardCurriculum(base, n_bins=5, unlock_fraction=0.3)
    assert [cur.open_bins(p) for p in (0.0, 0.059, 0.061, 0.15, 0.24, 0.3, 1.0)] == [1, 1, 2, 3, 5, 5, 5]
    q = lambda u: times.logit_normal_quantile(torch.tensor([u], dtype=torch.float64), -0.4, 1.0).item()
    g = torch.Generator().manual_seed(0)
    first = cur.sample(20000, 0.0, g)
    assert first.min().item() >= q(0.8) - 1e-6  # only the noisiest fifth
    half = cur.sample(20000, 0.1, g)  # 2 bins: law of t given t >= Q(0.6)
    assert half.min().item() >= q(0.6) - 1e-6
    assert ((half < q(0.8)).double().mean().item()) == pytest.approx(0.5, abs=0.015)
    full = cur.sample(40000, 0.9, g)
    for u in (0.1, 0.3, 0.5, 0.7, 0.9):
        assert (full <= q(u)).double().mean().item() == pytest.approx(u, abs=0.01)
    ref = torch.sigmoid(-0.4 + torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)))
    torch.testing.assert_close(times.logit_normal_quantile(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), -0.4, 1.0), ref)
    with pytest.raises(ValueError):
        cur.sample(4, 1.5)
    with pytest.raises(ValueError):
        EasyToHardCurriculum(base, n_bins=0)


# ---------------------------------------------------------------- recipes
_env, _checkpoint = run_env, read_checkpoint


def _history(out: Path) -> dict:
    return json.loads(_checkpoint(out / "checkpoint.safetensors")[1]["history"])


@pytest.mark.parametrize("name,extra", [
    ("alphaflow", ["--derivative", "fd", "--data", "checkerboard"]),
    ("alphaflow", ["--model", "dit", "--derivative", "fused"]), ("alphaflow", ["--drop-on-equal"]),
    ("uaimf", ["--derivative", "jvp"]), ("uaimf", ["--derivative", "fd", "--acceleration", "min_snr"]),
    ("uaimf", ["--data", "checkerboard", "--no-gap-weight"]), ("uaimf", ["--drop-on-equal"]),
    ("imf", ["--derivative", "jvp"]), ("imf", ["--derivative", "fd", "--time-inputs", "gap"]),
    ("imf", ["--model", "dit", "--derivative", "fused"]), ("imf", ["--aux-head-depth", "1"]),
    ("imf", ["--drop-on-equal"]),
])
def test_smoke_writes_every_output(name, extra, tmp_path):
    _check_outputs(tmp_path, load_recipe(name).main(["--smoke", "--out", str(tmp_path), *extra]))


def _check_outputs(tmp_path: Path, results: dict) -> None:
    files = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "metrics.json", "config.json", "loss.png"} <= files
    assert {"samples_1nfe.png", "samples_2nfe.png", "samples_4nfe.png"} <= files
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["results"].keys() == results.keys() == {"floor", "1nfe", "2nfe", "4nfe"}
    for row in results.values():
        assert all(math.isfinite(v) for v in row.values())
    assert all(math.isfinite(x) for x in _history(tmp_path)["loss"])


def test_alphaflow_smoke_walks_the_whole_curriculum(tmp_path):
    """6 smoke steps cover alpha = 1 (no extra forward), 0 < alpha < 1 (JVP-free) and alpha = 0 (MeanFlow rows, JVP)."""
    # p = 0: the plain squared error, which (unlike p = 1's L / (L + c) ~ 1 in float32) shows the two derivatives' difference
    whole_run = ["--smoke", "--p", "0", "--alpha-end", "1"]
    _check_outputs(tmp_path, load_recipe("alphaflow").main([*whole_run, "--derivative", "jvp", "--out", str(tmp_path)]))
    alpha = _history(tmp_path)["alpha"]
    sched = SigmoidCurriculum(0, 6)
    assert alpha == [sched(k) for k in range(6)]
    assert alpha[0] == 1.0 and 0 < alpha[3] < 1 and alpha[-1] == 0.0
    # the default lays the curriculum on the first half of the run
    load_recipe("alphaflow").main(["--smoke", "--out", str(tmp_path / "default")])
    half = SigmoidCurriculum(0, 3)
    assert _history(tmp_path / "default")["alpha"] == [half(k) for k in range(6)] and half(3) == 0.0
    # only the alpha = 0 step takes a derivative: a finite-difference run agrees until then
    load_recipe("alphaflow").main([*whole_run, "--derivative", "fd", "--out", str(tmp_path / "fd")])
    jvp_loss, fd_loss = _history(tmp_path)["loss"], _history(tmp_path / "fd")["loss"]
    assert jvp_loss[:5] == fd_loss[:5]
    assert jvp_loss[5] != fd_loss[5] and jvp_loss[5] == pytest.approx(fd_loss[5], rel=1e-2)


def test_uaimf_without_its_weights_is_meanflow(tmp_path):
    flags = ["--smoke", "--data", "digits", "--batch", "64", *UAIMF_LOSS_DEFAULTS]
    load_recipe("uaimf").main([*flags, "--acceleration", "none", "--no-gap-weight", "--out", str(tmp_path / "u")])
    load_recipe("meanflow").main([*flags, "--out", str(tmp_path / "m")])
    assert _history(tmp_path / "u")["loss"] == _history(tmp_path / "m")["loss"]
    load_recipe("uaimf").main([*flags, "--out", str(tmp_path / "w")])
    assert _history(tmp_path / "w")["loss"] != _history(tmp_path / "m")["loss"]
    # the official code's label dropout, on s = t rows only: the same in both recipes, and a different batch loss
    load_recipe("uaimf").main([*flags, "--acceleration", "none", "--no-gap-weight", "--drop-on-equal", "--out", str(tmp_path / "ue")])
    load_recipe("meanflow").main([*flags, "--drop-on-equal", "--out", str(tmp_path / "me")])
    assert _history(tmp_path / "ue")["loss"] == _history(tmp_path / "me")["loss"] != _history(tmp_path / "m")["loss"]


def test_imf_rejects_2d_data_and_bad_interval(tmp_path):
    with pytest.raises(SystemExit, match="--data digits"):
        load_recipe("imf").main(["--smoke", "--data", "checkerboard", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--t-min"):
        load_recipe("imf").main(["--smoke", "--t-min", "0.7", "--t-max", "0.2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--alpha-start"):
        load_recipe("alphaflow").main(["--smoke", "--alpha-start", "0.8", "--alpha-end", "0.5", "--out", str(tmp_path)])
    for name in ("alphaflow", "imf"):
        with pytest.raises(SystemExit, match="--beta2"):
            load_recipe(name).parse(["--beta2", "1.5"])
    for bad, message in ((["--t-std", "0"], "--t-std must be > 0"), (["--uniform-fraction", "1.5"], r"--uniform-fraction must be in \[0, 1\]"),
                         (["--v-weight", "-1"], "--v-weight must be >= 0"),
                         (["--aux-head-depth", "5"], r"--aux-head-depth must be in \[0, --depth=4\]"),
                         (["--aux-head-depth", "-1"], r"--aux-head-depth must be in \[0, --depth=4\], got -1")):
        with pytest.raises(SystemExit, match=message):
            load_recipe("imf").parse(bad)
    assert load_recipe("imf").parse([]).aux_head_depth == 4 and load_recipe("imf").parse(["--depth", "3"]).aux_head_depth == 3  # every block
    assert load_recipe("pmf").parse([]).aux_head_depth == 0
    for name in ("imf", "pmf"):
        assert load_recipe(name).parse(["--smoke", "--aux-head-depth", "4"]).aux_head_depth == 2  # --smoke caps --depth at 2
        with pytest.raises(SystemExit, match=r"--aux-head-depth must be in \[0, --depth=3\], got 4"):
            load_recipe(name).parse(["--depth", "3", "--aux-head-depth", "4"])


def test_imf_time_sampler_flags_draw_pmf_times():
    """--t-mean 0 --t-std 0.8 --uniform-fraction 0.1 --equal-before-sort draws pMF's times: the s = t rows then take one
    logit-normal(0, 0.8) draw (median 1/2, 10% uniform), not the larger of two as iMF's default (median above 1/2)."""
    import flowcore.times as times
    imf = load_recipe("imf")
    draws = {}
    for key, flags in (("imf", []), ("pmf", ["--t-mean", "0", "--t-std", "0.8", "--uniform-fraction", "0.1", "--equal-before-sort"])):
        args = imf.parse(flags)
        t, s = times.sample_pairs(200_000, times.logit_normal_with_uniform(args.t_mean, args.t_std, args.uniform_fraction), equal_fraction=1.0, equal_before_sort=args.equal_before_sort, generator=torch.Generator().manual_seed(0))
        assert torch.equal(t, s)
        draws[key] = t
    assert draws["pmf"].median().item() == pytest.approx(0.5, abs=0.005)
    # iMF's s = t rows: the max of two logit-normal(-0.4, 1) draws, P(t < 1/2) = Phi(0.4)^2 = 0.428
    assert (draws["imf"] < 0.5).float().mean().item() == pytest.approx(0.6554**2, abs=0.005)


def test_imf_tangent_is_the_guided_head_by_default_and_the_target_on_request():
    """iMF takes du/dt along its own guided v-head (v_c); --tangent target takes MeanFlow's v_g."""
    imf = load_recipe("imf")
    v_c, v_g = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    assert imf.parse([]).tangent is imf.Tangent.HEAD
    assert imf.jvp_tangent(imf.parse([]).tangent, v_c, v_g) is v_c
    assert imf.jvp_tangent(imf.parse(["--tangent", "target"]).tangent, v_c, v_g) is v_g


def test_imf_x_prediction_reads_the_u_head_as_an_image():
    """--prediction x: u = (z - x_u)/t, so the 1-NFE sample is the u-head's output at (eps, 1, 0) and a 2-NFE
    jump from 1 to 1/2 lands on (eps + x_u(eps, 1, 1/2))/2; --prediction v samples eps - u. fp64."""
    imf = load_recipe("imf")
    args = imf.parse(["--smoke", "--prediction", "x", "--omega", "1.5", "--t-min", "0.2", "--t-max", "0.7"])  # conditions built in fp64
    net, source = random_fp64_digits_model(imf, args)
    eps, y = torch.randn(8, *source.shape, dtype=torch.float64), torch.arange(8) % 10
    at = lambda v: torch.full((8,), v, dtype=torch.float64)  # noqa: E731
    c = imf.conditions(at(args.omega), at(args.t_min), at(args.t_max))
    with torch.no_grad():
        x_u = net(eps, at(1.0), at(0.0), y, c)[0]
        torch.testing.assert_close(imf.generators(net, args, source)["1nfe"](eps, y), x_u, rtol=1e-12, atol=1e-12)
        z_half = 0.5 * (eps + net(eps, at(1.0), at(0.5), y, c)[0])
        torch.testing.assert_close(imf.generators(net, args, source)["2nfe"](eps, y), net(z_half, at(0.5), at(0.0), y, c)[0], rtol=1e-12, atol=1e-12)
        v_args = imf.parse(["--smoke", "--prediction", "v", "--omega", "1.5", "--t-min", "0.2", "--t-max", "0.7"])
        torch.testing.assert_close(imf.generators(net, v_args, source)["1nfe"](eps, y), eps - x_u, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", RECIPES)
def test_help_lists_flags(name):
    assert_help_lists(name, "--smoke", "--resume", "--derivative")


@pytest.mark.parametrize("name,extra", [("alphaflow", ["--curriculum-steps", "6"]), ("uaimf", ["--curriculum-steps", "6"]), ("imf", [])])
def test_resume_continues_exactly(name, extra, tmp_path):
    """A run of 3 steps resumed to 6 equals a straight run of 6 (curricula laid on the same 6 steps)."""
    assert_resume_is_exact(name, tmp_path, extra)


def test_imf_runs_unchanged_under_torchrun(tmp_path):
    assert_runs_under_torchrun("imf", tmp_path)


# ---------------------------------------------------------------- default runs (slow)
@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("variant_runs")
    done: dict = {}

    def run(label: str, recipe: str, *flags: str) -> Path:
        """The folder of a finished run (trained once per module)."""
        out = base / label
        if label not in done:
            subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "--out", str(out), *flags], check=True, env=_env())
            done[label] = out
        return out

    return run


def _results(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["results"]


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_default_run_meets_the_digits_bars(name, default_runs):
    """1-NFE FD within 1.5x of the FM teacher's, both as means of 5 noise draws (README, "How to read a digits FD")."""
    teacher, student = default_runs("fm", "fm"), default_runs(name, name)
    teacher_fd = min(mean_fd_over_draws(teacher, g) for g in ("euler50", "heun50"))
    assert mean_fd_over_draws(student, "1nfe") <= 1.5 * teacher_fd
    results = _results(student)
    assert results["1nfe"]["class_acc"] >= 0.90
    assert results["2nfe"]["fd"] <= results["1nfe"]["fd"] * 1.1


UAIMF_IS_NOT_FASTER = pytest.mark.xfail(strict=True, reason="UAIMF does not beat MeanFlow at this scale: 1-NFE FD 1.22 vs 1.04 (README claims)")


@pytest.mark.slow
@pytest.mark.parametrize("name,meanflow_flags", [("alphaflow", ALPHAFLOW_LOSS_DEFAULTS),
                                                 pytest.param("uaimf", UAIMF_LOSS_DEFAULTS, marks=UAIMF_IS_NOT_FASTER)])
def test_variant_beats_meanflow_at_equal_steps(name, meanflow_flags, default_runs):
    """The variant's default against MeanFlow with the same loss settings and steps (seed 0, the README's claims table)."""
    meanflow = default_runs(f"meanflow_digits_for_{name}", "meanflow", "--data", "digits", "--steps", "7000", "--batch", "128", *meanflow_flags)
    student = default_runs(name, name)
    assert _results(student)["1nfe"]["fd"] < _results(meanflow)["1nfe"]["fd"]


@pytest.mark.parametrize("recipe,flag", [("meanflow", "--uniform-fraction"), ("meanflow", "--equal-fraction"), ("pmf", "--uniform-fraction"),
                                         ("alphaflow", "--fm-fraction"), ("uaimf", "--dtd-fraction")])
@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_fraction_flags_outside_the_unit_interval_are_refused_by_name(recipe, flag, value):
    with pytest.raises(SystemExit, match=f"{flag} must be in \\[0, 1\\], got {value}"):
        load_recipe(recipe).parse(["--smoke", flag, value])
