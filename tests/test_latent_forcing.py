"""Latent Forcing (arXiv 2602.11401): the two-time samplers against the paper's laws (converted from
its data-at-1 time), the x-prediction v-loss on the closed-form Gaussian flow, the two-phase sampling
schedule and solvers, the latent normalisation and token alignment, and the recipe (smoke, --help,
exact --resume, torchrun, bad flags; the default-run bar is @slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowcore import losses, representations, sampling, targets, times
from flowcore.latent_streams import LatentNormalizer, PrincipalChannels, latent_from_pixel_grid, latent_on_pixel_grid
from flowcore.nn.dit import patchify
from tests import oracles
from tests.recipe_checks import assert_help_lists, assert_resume_is_exact, assert_runs_under_torchrun, read_checkpoint, run_env

ROOT = Path(__file__).resolve().parents[1]
N = 200_000


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _ks(samples: torch.Tensor, cdf) -> float:
    """Kolmogorov-Smirnov distance of ``samples`` to ``cdf`` (fp64)."""
    x, _ = samples.double().sort()
    n = x.numel()
    f = cdf(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - f
    lower = f - torch.arange(0, n, dtype=torch.float64) / n
    return float(torch.maximum(upper, lower).max())


def _logit_normal_cdf(mean: float, std: float):
    return lambda u: _normal_cdf((torch.log(u) - torch.log1p(-u) - mean) / std)


def _uniform_cdf(low: float, high: float):
    return lambda u: ((u - low) / (high - low)).clamp(0, 1)


# ---------------------------------------------------------------- time samplers


def test_cascaded_sampler_matches_the_paper_laws_in_flowcore_time():
    st = times.latent_first_times(N, 0.4, generator=torch.Generator().manual_seed(0))
    latent_step = st.latent_weight.bool()
    assert torch.equal(st.pixel_weight + st.latent_weight, torch.ones(N))
    assert abs(latent_step.float().mean().item() - 0.4) < 4 * math.sqrt(0.24 / N)
    # latent steps: pixels are pure noise (paper t_pix = 0 -> flowcore 1), latent t ~ paper sigmoid(N(-1.2, 1))
    assert (st.t_pix[latent_step] == 1.0).all()
    paper_lat = 1.0 - st.t_lat[latent_step]
    ks_bound = 1.63 / math.sqrt(paper_lat.numel())  # 1% level
    assert _ks(paper_lat, _logit_normal_cdf(-1.2, 1.0)) < ks_bound
    # pixel steps: the latent is slightly noised (paper U[0.75, 1] -> flowcore U[0, 0.25]), pixels from the mixture
    pixel_step = ~latent_step
    assert (st.t_lat[pixel_step] >= 0).all() and (st.t_lat[pixel_step] <= 0.25).all()
    assert _ks(1.0 - st.t_lat[pixel_step], _uniform_cdf(0.75, 1.0)) < 1.63 / math.sqrt(int(pixel_step.sum()))
    paper_pix = 1.0 - st.t_pix[pixel_step]
    mixture = lambda u: 0.9 * _logit_normal_cdf(-0.4, 0.8)(u) + 0.1 * _uniform_cdf(0.0, 0.5)(u)
    assert _ks(paper_pix, mixture) < 1.63 / math.sqrt(paper_pix.numel())
    # the sign of the converted means matters: the un-flipped law is far away
    assert _ks(paper_pix, lambda u: 0.9 * _logit_normal_cdf(0.4, 0.8)(u) + 0.1 * _uniform_cdf(0.5, 1.0)(u)) > 0.1


def test_cascaded_sampler_extremes_and_checks():
    only_pixels = times.latent_first_times(1000, 0.0, generator=torch.Generator().manual_seed(1))
    assert (only_pixels.latent_weight == 0).all() and (only_pixels.t_lat <= 0.25).all()
    only_latent = times.latent_first_times(1000, 1.0, generator=torch.Generator().manual_seed(1))
    assert (only_latent.pixel_weight == 0).all() and (only_latent.t_pix == 1).all()
    with pytest.raises(ValueError, match="p_latent"):
        times.latent_first_times(10, 1.5)


def test_joint_sampler_is_independent_with_both_losses():
    st = times.independent_stream_times(N, generator=torch.Generator().manual_seed(2))
    assert (st.pixel_weight == 1).all() and (st.latent_weight == 1).all()
    corr = torch.corrcoef(torch.stack([st.t_pix, st.t_lat]))[0, 1].item()
    assert abs(corr) < 4 / math.sqrt(N)
    assert _ks(1.0 - st.t_lat, _logit_normal_cdf(-1.2, 1.0)) < 1.63 / math.sqrt(N)
    # independence: P(t_pix > 1/2, t_lat > 1/2) = P(t_pix > 1/2) P(t_lat > 1/2)
    a, b = st.t_pix > 0.5, st.t_lat > 0.5
    assert abs((a & b).float().mean().item() - a.float().mean().item() * b.float().mean().item()) < 4 / math.sqrt(N)


# ---------------------------------------------------------------- x-prediction, v-loss


def test_v_from_x_is_the_paper_velocity_with_flipped_time():
    g = torch.Generator().manual_seed(3)
    x, e = torch.randn(64, 5, generator=g, dtype=torch.float64), torch.randn(64, 5, generator=g, dtype=torch.float64)
    t_paper = torch.rand(64, generator=g, dtype=torch.float64)
    z = t_paper[:, None] * x + (1 - t_paper[:, None]) * e  # the paper's path, data at 1
    v_paper = (x - z) / (1 - t_paper[:, None]).clamp_min(0.05)
    assert torch.allclose(targets.velocity_from_x_prediction(z, x, 1 - t_paper, 0.05), -v_paper, rtol=0, atol=1e-12)


def test_posterior_mean_x_prediction_gives_the_exact_velocity_and_minimises_the_v_loss():
    """Gaussian data N(0, s2 I): E[x | z_t] = z (1 - t) s2 / sigma_t^2; its v is the oracle velocity, and among
    x_hat = c z the Monte-Carlo v-loss is minimised at that c (the loss's excess over it vanishes)."""
    s2 = 0.49
    for t_val in (0.1, 0.5, 0.9):
        t = torch.full((N,), t_val, dtype=torch.float64)
        g = torch.Generator().manual_seed(4)
        x = math.sqrt(s2) * torch.randn(N, 2, generator=g, dtype=torch.float64)
        z = (1 - t[:, None]) * x + t[:, None] * torch.randn(N, 2, generator=g, dtype=torch.float64)
        c_star = (1 - t_val) * s2 / oracles.sigma(torch.tensor(t_val, dtype=torch.float64), s2) ** 2
        v_hat = targets.velocity_from_x_prediction(z, c_star * z, t, 0.05)
        assert torch.allclose(v_hat, oracles.velocity(z, t, s2), rtol=1e-12, atol=1e-12)
        v_true = targets.velocity_from_x_prediction(z, x, t, 0.05)
        c_fit = float((x * z).sum() / (z * z).sum())  # argmin_c sum ||v(c z) - v(x)||^2 = argmin_c sum ||x - c z||^2 / t^2
        assert abs(c_fit - float(c_star)) < 5e-3
        loss = lambda c: losses.squared_error(targets.velocity_from_x_prediction(z, c * z, t, 0.05), v_true, losses.Reduce.MEAN).mean()
        assert loss(c_star) < loss(c_star + 0.05) and loss(c_star) < loss(c_star - 0.05)


def test_two_stream_loss_is_the_official_batch_mean():
    lp, ll = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 20.0, 30.0, 40.0])
    wl = torch.tensor([1.0, 0.0, 0.0, 1.0])
    got = losses.two_stream_loss(lp, ll, 1 - wl, wl, 0.333)
    assert got.item() == pytest.approx((2 + 3) / 4 + 0.333 * (10 + 40) / 4, rel=1e-6)
    assert losses.two_stream_loss(lp, ll, torch.zeros(4), torch.zeros(4)).item() == 0.0
    with pytest.raises(ValueError, match="latent_loss"):
        losses.two_stream_loss(lp, ll[:3], wl, wl)


# ---------------------------------------------------------------- two-phase sampling


def test_cascaded_schedule_is_the_official_one_flipped():
    steps, k = 50, 25
    t_pix, t_lat = sampling.cascaded_stream_grids(steps)
    assert t_pix.shape == t_lat.shape == (steps + 1,)
    official_pix = torch.cat([torch.zeros(k + 1), torch.linspace(0.0, 1.0, k + 1)[1:]])
    official_lat = torch.cat([torch.linspace(0.0, 1.0, k + 1), torch.ones(k)])
    assert torch.allclose(1 - t_pix, official_pix, atol=1e-7) and torch.allclose(1 - t_lat, official_lat, atol=1e-7)
    moving_lat, moving_pix = t_lat[1:] < t_lat[:-1], t_pix[1:] < t_pix[:-1]
    assert moving_lat[:k].all() and not moving_lat[k:].any() and moving_pix[k:].all() and not moving_pix[:k].any()
    assert (t_pix[: k + 1] == 1).all() and (t_lat[k:] == 0).all()
    for bad in (0, 3, 7):
        with pytest.raises(ValueError, match="even"):
            sampling.cascaded_stream_grids(bad)
    t_a, t_b = sampling.simultaneous_stream_grids(4)
    assert torch.equal(t_a, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])) and torch.equal(t_a, t_b)


def _gaussian_streams(s2_pix: float, s2_lat: float, calls: list):
    def field(zp, zl, tp, tl):
        calls.append((tp[0].item(), tl[0].item()))
        return oracles.velocity(zp, tp, s2_pix), oracles.velocity(zl, tl, s2_lat)
    return field


@pytest.mark.parametrize("two_stream,nfe,tol", [(sampling.stream_heun, 2 * 20 - 1, 0.05), (sampling.stream_euler, 20, 0.25)])
def test_stream_solvers_run_each_phase_like_the_one_stream_solvers(two_stream, nfe, tol):
    """Two independent Gaussian streams with exact velocities on the cascaded schedule: the latent phase
    calls the field only with pure-noise pixels, the pixel phase only with the clean latent; each stream
    ends where the one-stream solver on its own 10-step grid ends (Heun: the latent's last step, mid-way
    through the run, is a full Heun step; only the final step is Euler), and near the exact flow map z_1 s."""
    s2_pix, s2_lat, calls = 0.25, 2.0, []
    g = torch.Generator().manual_seed(5)
    z_pix, z_lat = torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(8, 16, 4, 4, generator=g, dtype=torch.float64)
    out_pix, out_lat = two_stream(_gaussian_streams(s2_pix, s2_lat, calls), z_pix, z_lat, *sampling.cascaded_stream_grids(20))
    assert len(calls) == nfe
    assert all(tp == 1.0 for tp, tl in calls if tl > 0) and all(tl == 0.0 for tp, tl in calls if tp < 1)
    v_pix, v_lat = (lambda z, t: oracles.velocity(z, t, s2_pix)), (lambda z, t: oracles.velocity(z, t, s2_lat))
    grid = sampling.cascaded_stream_grids(20)[0][10:]  # the stream's own (float32) 10-step ramp
    if two_stream is sampling.stream_heun:
        want_pix = sampling.heun(v_pix, z_pix, grid)
        zero = torch.zeros(8, dtype=torch.float64)
        want_lat = sampling.heun_step(v_lat, sampling.heun(v_lat, z_lat, grid[:-1]), zero + grid[-2].double(), zero)
    else:
        want_pix, want_lat = sampling.euler(v_pix, z_pix, grid), sampling.euler(v_lat, z_lat, grid)
    assert torch.allclose(out_pix, want_pix, rtol=0, atol=1e-12) and torch.allclose(out_lat, want_lat, rtol=0, atol=1e-12)
    assert torch.allclose(out_pix, z_pix * math.sqrt(s2_pix), rtol=tol) and torch.allclose(out_lat, z_lat * math.sqrt(s2_lat), rtol=tol)


def test_stream_grids_are_checked():
    field = _gaussian_streams(1.0, 1.0, [])
    z = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="never increase"):
        sampling.stream_euler(field, z, z, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="move at least one"):
        sampling.stream_euler(field, z, z, torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]))


# ---------------------------------------------------------------- latent normalisation and alignment


def test_latent_normalizer_matches_the_pixel_std_per_channel():
    g = torch.Generator().manual_seed(6)
    feats = torch.randn(500, 16, 4, 4, generator=g) * torch.linspace(0.1, 5.0, 16)[None, :, None, None] + torch.arange(16.0)[None, :, None, None]
    pixels = 0.6 * torch.randn(500, 1, 8, 8, generator=g)
    norm = LatentNormalizer.fit(feats, pixels)
    out = norm(feats).double()
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(16, dtype=torch.float64), atol=1e-5)
    pix_std = pixels.double().std().item()
    assert norm.pixel_std == pytest.approx(pix_std, rel=1e-9)
    var = feats.double().var(dim=(0, 2, 3), unbiased=False)
    want = pix_std * torch.sqrt(var / (var + 1e-5))  # = pix_std up to the paper's eps = 1e-5 in the variance
    assert torch.allclose(out.std(dim=(0, 2, 3), unbiased=False), want, rtol=1e-5)
    assert torch.allclose(want, torch.full((16,), pix_std, dtype=torch.float64), rtol=1e-3)
    with pytest.raises(ValueError, match="features must be"):
        norm(feats[:, :3])


def test_principal_channels_recover_a_known_channel_covariance():
    """Cells drawn with covariance Q diag(lam) Q^T: the fitted basis is Q's top columns (up to sign), the projected
    channels have variances lam (largest first) and are uncorrelated; k = C is a rotation (norms kept)."""
    g = torch.Generator().manual_seed(8)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    lam = torch.tensor([9.0, 4.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    cells = (torch.randn(40000, 6, generator=g, dtype=torch.float64) * lam.sqrt()) @ q.T + 3.0
    feats = cells.reshape(2500, 4, 4, 6).permute(0, 3, 1, 2).float()
    pc = PrincipalChannels.fit(feats, 3)
    assert pc.basis.shape == (6, 3)
    cos = (pc.basis.double().T @ q[:, :3]).abs().diagonal()
    assert torch.all(cos > 0.999)
    out = pc(feats).double().permute(0, 2, 3, 1).reshape(-1, 3)
    cov = torch.cov(out.T, correction=0)
    assert torch.allclose(cov.diagonal(), lam[:3], rtol=0.05) and cov.fill_diagonal_(0).abs().max() < 0.1
    full = PrincipalChannels.fit(feats, 6)
    centred = feats - feats.mean(dim=(0, 2, 3), keepdim=True)
    assert torch.allclose(full(feats).norm(dim=1), centred.norm(dim=1), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="k must be"):
        PrincipalChannels.fit(feats, 7)


def test_latent_cells_line_up_with_dit_tokens():
    g = torch.Generator().manual_seed(7)
    latent = torch.randn(3, 16, 4, 4, generator=g)
    up = latent_on_pixel_grid(latent, (8, 8))
    assert torch.equal(latent_from_pixel_grid(up, (4, 4)), latent)
    tokens = patchify(up, 2).reshape(3, 16, 2, 2, 16)  # (B, token, row, col, channel)
    cells = representations.feature_tokens(latent)  # (B, token, channel)
    assert torch.equal(tokens, cells[:, :, None, None, :].expand_as(tokens))
    with pytest.raises(ValueError, match="must divide"):
        latent_on_pixel_grid(latent, (8, 6))


# ---------------------------------------------------------------- the recipe


def _recipe():
    spec = importlib.util.spec_from_file_location("recipe_latent_forcing", ROOT / "recipes" / "latent_forcing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_env = run_env


@pytest.mark.parametrize("extra", [[], ["--order", "joint", "--solver", "euler", "--latent-channels", "4"], ["--order", "pixel-only", "--encoder", "random"]])
def test_smoke_writes_every_output(extra, tmp_path):
    results = _recipe().main(["--smoke", "--out", str(tmp_path), *extra])
    files = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "metrics.json", "config.json", "loss.png"} <= files
    assert any(f.startswith("samples_") and f.endswith(".png") for f in files)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["results"].keys() == results.keys() and "floor" in results
    two_streams = not extra or extra[1] != "pixel-only"
    assert len(results) == 3 + two_streams and any(k.startswith("pixels_given_data_latent") for k in results) == two_streams
    assert metrics["order"] == (extra[1] if extra else "cascaded") and metrics["train_seconds"] > 0
    for row in results.values():
        assert all(v == v for v in row.values())


def test_help_lists_flags():
    assert_help_lists("latent_forcing", "--smoke", "--resume", "--out", "--order", "pixel-only", "--latent-weight", "--encoder")


def test_resume_continues_exactly(tmp_path):
    assert_resume_is_exact("latent_forcing", tmp_path)


def test_resume_of_a_finished_run_reevaluates_with_other_sampler_flags(tmp_path):
    """--ode-steps / --solver / --cfg only change the evaluation: a finished run resumes with new values (and the
    same weights), while a training flag still blocks the resume."""
    recipe = _recipe()
    recipe.main(["--smoke", "--out", str(tmp_path)])
    weights = read_checkpoint(tmp_path / "checkpoint.safetensors")[0]
    results = recipe.main(["--smoke", "--out", str(tmp_path), "--resume", "--ode-steps", "2", "--cfg", "1.0", "--solver", "euler"])
    assert "euler2" in results
    after = read_checkpoint(tmp_path / "checkpoint.safetensors")[0]
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    with pytest.raises(ValueError, match="latent_p"):
        recipe.main(["--smoke", "--out", str(tmp_path), "--resume", "--latent-p", "0.5"])


def test_bad_flags_are_named(tmp_path):
    with pytest.raises(SystemExit, match="--ode-steps"):
        _recipe().main(["--smoke", "--ode-steps", "5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--latent-channels"):
        _recipe().main(["--smoke", "--latent-channels", "17", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--model dit"):
        _recipe().main(["--smoke", "--model", "mlp", "--out", str(tmp_path)])


def test_runs_unchanged_under_torchrun(tmp_path):
    assert_runs_under_torchrun("latent_forcing", tmp_path)


def test_ablation_script_writes_a_table(tmp_path):
    spec = importlib.util.spec_from_file_location("lf_ablation", ROOT / "scripts" / "latent_forcing_ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.main(["--out", str(tmp_path), "--smoke"])
    assert [row["order"] for row in table] == ["cascaded", "joint", "pixel-only"]
    assert len({row["steps"] for row in table}) == 1
    assert (tmp_path / "ablation.md").is_file() and json.loads((tmp_path / "ablation.json").read_text()) == table


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory) -> dict[str, dict]:
    """The default recipe (cascaded) and plain pixel flow matching on the same DiT at equal steps."""
    root, out = tmp_path_factory.mktemp("latent_forcing_default"), {}
    for order in ("cascaded", "pixel-only"):
        subprocess.run([sys.executable, str(ROOT / "recipes" / "latent_forcing.py"), "--order", order, "--out", str(root / order)],
                       check=True, env=_env())
        out[order] = json.loads((root / order / "metrics.json").read_text())["results"]
    return out


@pytest.mark.slow
def test_default_samples_are_recognisable(default_runs):
    """Both orders' 20-step Heun samples are recognisable digits (class accuracy >= 80 %; measured 99.3 % / 99.7 %)."""
    for order, results in default_runs.items():
        assert results["heun20"]["class_acc"] >= 0.8, order


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not reproduced at this scale: 20-step Heun FD 5.35 (cascaded) vs 2.0 (pixel-only) "
                   "after 2000 steps, 4.28 vs 1.18 without CFG; README, Latent Forcing ordering ablation. Strict: a change that makes it hold must say so.")
def test_default_cascaded_beats_pixel_only_at_equal_steps(default_runs):
    """The paper's claim on digits at the default budget: Latent Forcing's 20-step Heun FD below plain pixel
    flow matching's on the same DiT at equal steps."""
    assert default_runs["cascaded"]["heun20"]["fd"] < default_runs["pixel-only"]["heun20"]["fd"]
