"""Unified Latents (flowcore.latents, recipes/unified_latents.py, scripts/unified_latents_sweep.py) against
oracles: VP/log-SNR identities, fp64 finite differences, the Gaussian latent whose bitrate bound has a
closed form, exact ancestral sampling of a Gaussian, and a short training whose reconstructions of
held-out digits must come from their latents."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from flowcore import latents, metrics
from tests.recipe_checks import assert_help_lists, assert_resume_is_exact, assert_runs_under_torchrun, run_env
from flowcore.latents import LogSNRSchedule, LogSNRShape

ROOT = Path(__file__).resolve().parents[1]
SHAPES = list(LogSNRShape)


def _load(rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recipe():
    return _load("recipes/unified_latents.py", "recipe_unified_latents")


# ---------------------------------------------------------------- schedules
def test_alpha_sigma_identities():
    lam = torch.linspace(-20, 20, 81, dtype=torch.float64)
    alpha, sigma = latents.alpha_sigma(lam)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(lam), rtol=0, atol=1e-14)
    torch.testing.assert_close(latents.log_snr(alpha, sigma), lam, rtol=0, atol=1e-9)
    # UL's default lambda_0 = 5 puts the encoder noise at sigma = 0.08 (the paper's number)
    assert latents.alpha_sigma(torch.tensor([5.0], dtype=torch.float64))[1].item() == pytest.approx(0.0819, abs=1e-4)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_schedule_endpoints_monotone_and_derivative(shape):
    s = LogSNRSchedule(5.0, -10.0, shape)
    ends = s.lam(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ends, torch.tensor([5.0, -10.0], dtype=torch.float64), rtol=0, atol=1e-12)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    lam = s.lam(t)
    assert bool((lam[1:] < lam[:-1]).all())
    h = 1e-6
    fd = (s.lam(t + h) - s.lam(t - h)) / (2 * h)
    torch.testing.assert_close(s.dlam_dt(t), fd, rtol=1e-7, atol=1e-7)
    # the integral of dlambda/dt over [0, 1] is lambda_min - lambda_max (trapezoid, fine grid)
    grid = torch.linspace(0, 1, 200001, dtype=torch.float64)
    assert torch.trapezoid(s.dlam_dt(grid), grid).item() == pytest.approx(-15.0, rel=1e-5)


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="lambda_max must exceed"):
        LogSNRSchedule(-1.0, 2.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LogSNRSchedule(5.0, -10.0).lam(torch.tensor([1.5]))
    with pytest.raises(TypeError, match="LogSNRShape"):
        LogSNRSchedule(5.0, -10.0, "cosine")


# ---------------------------------------------------------------- noise tie, losses, bits
def test_encoder_noise_is_the_prior_end_point():
    for lam0 in (3.0, 5.0, 7.0):
        prior = latents.prior_schedule(lam0)
        g = torch.Generator().manual_seed(0)
        z, eps = torch.randn(32, 16, generator=g, dtype=torch.float64), torch.randn(32, 16, generator=g, dtype=torch.float64)
        z0 = latents.noisy_latent(z, eps, prior)
        a0, s0 = latents.alpha_sigma(prior.lam(torch.zeros(1, dtype=torch.float64)))  # the prior's own lambda at t = 0
        torch.testing.assert_close(z0, a0 * z + s0 * eps, rtol=0, atol=1e-14)
        assert s0.item() == pytest.approx(math.sqrt(1 / (1 + math.exp(lam0))), rel=1e-12)


def test_prior_loss_of_exact_denoiser_is_the_terminal_kl_in_closed_form():
    prior = latents.prior_schedule(5.0, -6.0)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(64, 16, generator=g, dtype=torch.float64) * 1.7
    t = torch.rand(64, generator=g, dtype=torch.float64)
    loss = latents.prior_loss(z, z.clone(), t, prior)  # z_hat = z_clean: the ELBO integrand vanishes
    a1, s1 = latents.alpha_sigma(torch.tensor([-6.0], dtype=torch.float64))
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(a1 * z, s1), torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(loss, kl, rtol=1e-12, atol=1e-12)
    assert latents.elbo_mse_term(z, z, t, prior).abs().max().item() == 0.0


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bitrate_bound_of_a_gaussian_latent_equals_its_mutual_information(shape):
    """z_clean ~ N(0, I_d) with the exact denoiser E[z | z_t] = alpha_t z_t: E[L_z] = I(z_clean; z_0) =
    d/2 log(1 + e^lambda_0) nats exactly (the bound is tight when the prior is the true marginal)."""
    d, lam0, n, k = 4, 5.0, 4096, 64
    prior = latents.prior_schedule(lam0, -8.0, shape)
    g = torch.Generator().manual_seed(2)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(k):  # stratified t
        t = (i + torch.rand(n, generator=g, dtype=torch.float64)) / k
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        lam = prior.lam(t)
        z_t = latents.diffuse(z, torch.randn(n, d, generator=g, dtype=torch.float64), lam)
        z_hat = latents.alpha_sigma(lam)[0][:, None] * z_t
        total += latents.prior_loss(z, z_hat, t, prior).mean() / k
    exact = d / 2 * math.log1p(math.exp(lam0))
    assert total.item() == pytest.approx(exact, rel=0.02)
    assert float(latents.nats_to_bits(exact)) == pytest.approx(exact / math.log(2))


def test_bits_conversion_and_psnr():
    assert latents.nats_to_bits(64 * math.log(2), 64) == pytest.approx(1.0, rel=1e-15)
    assert latents.nats_to_bits(1.0) == pytest.approx(1.4426950408889634, rel=1e-15)
    with pytest.raises(ValueError):
        latents.nats_to_bits(1.0, 0)
    x = torch.zeros(10, 1, 8, 8)
    assert metrics.psnr(x + 0.1, x, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-6)


def test_decoder_loss_is_the_sigmoid_weighted_elbo_term():
    sched = LogSNRSchedule(10.0, -10.0)
    g = torch.Generator().manual_seed(3)
    x, x_hat = torch.randn(32, 64, generator=g, dtype=torch.float64), torch.randn(32, 64, generator=g, dtype=torch.float64)
    t = torch.rand(32, generator=g, dtype=torch.float64)
    lam = sched.lam(t)
    expect = 0.5 * (-sched.dlam_dt(t)) * torch.exp(lam) * (x - x_hat).pow(2).sum(1) / (1 + torch.exp(lam - 2.0))
    torch.testing.assert_close(latents.decoder_loss(x, x_hat, t, sched, 2.0), expect, rtol=1e-12, atol=0)
    assert latents.sigmoid_weight(torch.tensor([2.0]), 2.0).item() == 0.5
    torch.testing.assert_close(latents.decoder_loss(x, x_hat, t, sched, 200.0), latents.elbo_mse_term(x, x_hat, t, sched), rtol=1e-12, atol=0)


def test_x_from_v_inverts_the_vp_velocity():
    g = torch.Generator().manual_seed(4)
    x, eps = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randn(16, 5, generator=g, dtype=torch.float64)
    lam = torch.randn(16, generator=g, dtype=torch.float64) * 5
    alpha, sigma = latents.alpha_sigma(lam)
    z = latents.diffuse(x, eps, lam)
    v = alpha[:, None] * eps - sigma[:, None] * x
    torch.testing.assert_close(latents.x_from_v(z, v, lam), x, rtol=1e-12, atol=1e-12)


def test_ancestral_sampling_of_a_gaussian_converges_to_the_exact_marginal():
    """Data N(0, s^2): the exact x-prediction is alpha s^2 z / (alpha^2 s^2 + sigma^2); ancestral sampling from
    N(0, 1) at lambda_min ends at lambda_max (= lambda_0) with variance -> alpha_0^2 s^2 + sigma_0^2 as the
    steps grow (each step drops the posterior variance of x, a first-order error in the step size)."""
    s2, sched = 0.3, LogSNRSchedule(5.0, -12.0)
    def denoise(z, t):
        a, s = latents.alpha_sigma(sched.lam(t))
        return (a * s2 / (a**2 * s2 + s**2))[:, None] * z
    a0, s0 = latents.alpha_sigma(torch.tensor([5.0], dtype=torch.float64))
    exact = (a0**2 * s2 + s0**2).item()
    errors = []
    for steps in (40, 160, 640):
        g = torch.Generator().manual_seed(5)
        z = latents.ancestral_sample(denoise, torch.randn(20000, 4, generator=g, dtype=torch.float64), torch.linspace(1, 0, steps + 1, dtype=torch.float64), sched, g)
        errors.append(abs(z.var().item() - exact))
    assert errors[0] > 3 * errors[1] and errors[2] < 0.015 * exact, errors


# ---------------------------------------------------------------- a short training: the decoder uses the latent
def test_short_training_reconstructs_held_out_digits_through_the_latent():
    """Encoder + decoder (+ prior) trained jointly for 1000 steps of 128 on the 80 % training split (loss factor
    0.3, warmed up over 200 steps, as ``--loss-factor`` / ``--warmup-steps``), then asked to reconstruct 32
    held-out digits it never saw, by 50 ancestral decoder steps from each image's noise-free z_0.

    Stated error: MSE < 0.25 against a held-out pixel variance of 0.58 (measured 0.173); reconstructions from
    another image's latent must be at least twice as far (measured 0.518), so the decoder reads the unseen
    image from the latent rather than producing a typical digit."""
    from flowcore import data
    from flowcore.nn import MLP, MLPConfig
    torch.manual_seed(0)
    recipe = _recipe()
    (x_train, _), (x_held, _) = data.digits_train_heldout()
    x, latent_dim, batch = x_held[:32], 8, 128
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.SiLU(), torch.nn.Linear(64, latent_dim))
    dec = recipe.LatentConditioned(64, latent_dim, 128, 2)
    prior = MLP(MLPConfig(dim=latent_dim, width=32, depth=1))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), *prior.parameters()], lr=3e-3)
    p_sched, d_sched = latents.prior_schedule(5.0), LogSNRSchedule(10.0, -10.0)
    rows = torch.Generator().manual_seed(1)
    for step in range(1000):
        xb = x_train[torch.randint(0, x_train.shape[0], (batch,), generator=rows)]
        z = enc(xb)
        z0 = latents.noisy_latent(z, torch.randn_like(z), p_sched)
        t_z, t_x = torch.rand(batch), torch.rand(batch)
        z_t = latents.diffuse(z, torch.randn_like(z), p_sched.lam(t_z))
        loss_z = latents.prior_loss(z, latents.x_from_v(z_t, prior(z_t, t_z, t_z), p_sched.lam(t_z)), t_z, p_sched)
        x_t = latents.diffuse(xb, torch.randn_like(xb), d_sched.lam(t_x))
        loss_x = latents.decoder_loss(xb, latents.x_from_v(x_t, dec(x_t, t_x, z0), d_sched.lam(t_x)), t_x, d_sched, 2.0)
        opt.zero_grad()
        (0.3 * min(1.0, step / 200) * loss_z + loss_x).mean().backward()
        opt.step()
    with torch.no_grad():
        z0 = latents.noisy_latent(enc(x), torch.zeros(x.shape[0], latent_dim), p_sched)

        def reconstruct(cond: torch.Tensor) -> torch.Tensor:
            denoise = lambda xt, t: latents.x_from_v(xt, dec(xt, t, cond), d_sched.lam(t))
            g = torch.Generator().manual_seed(0)
            xt = latents.ancestral_sample(denoise, torch.randn(x.shape, generator=g), torch.linspace(1, 0, 51), d_sched, g)
            return denoise(xt, torch.zeros(x.shape[0])).clamp(-1, 1)

        own = (reconstruct(z0) - x).pow(2).mean().item()
        swapped = (reconstruct(z0.roll(1, 0)) - x).pow(2).mean().item()
    assert x.var().item() == pytest.approx(0.576, abs=0.01)
    assert own < 0.25, own
    assert swapped > 2 * own, (own, swapped)


# ---------------------------------------------------------------- the recipe
_env = run_env


def test_recipe_smoke_writes_every_output(tmp_path):
    results = _recipe().main(["--smoke", "--out", str(tmp_path)])
    files = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "metrics.json", "config.json", "loss.png", "samples_reconstruction.png", "samples_4steps.png"} <= files
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["results"]) == {"floor", "4steps"}
    assert m["sigma0"] == pytest.approx(math.sqrt(1 / (1 + math.exp(5.0))))
    assert m["latent"]["bits_per_pixel"] == pytest.approx(m["latent"]["bits_per_image"] / 64)
    assert m["latent"]["bits_per_image"] > 0 and math.isfinite(m["latent"]["bits_per_image"])
    rec = m["reconstruction"]
    assert rec["psnr"] == pytest.approx(10 * math.log10(4 / rec["mse"]), rel=1e-6)
    assert results["latent"] == m["latent"]
    with safe_open(str(tmp_path / "checkpoint.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    for role in ("model", "ema_0.999"):
        for part in ("encoder", "prior", "decoder"):
            assert any(k.startswith(f"module/{role}/{part}.") for k in keys), (role, part, keys[:5])


def test_recipe_help_and_bad_flags(tmp_path):
    assert_help_lists("unified_latents", "--lambda0", "--smoke", "--resume")
    with pytest.raises(SystemExit, match="--data digits"):
        _recipe().main(["--smoke", "--data", "checkerboard", "--out", str(tmp_path)])


def test_recipe_resume_continues_exactly(tmp_path):
    (a, _), (b, _) = assert_resume_is_exact("unified_latents", tmp_path)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_recipe_runs_under_torchrun(tmp_path):
    assert_runs_under_torchrun("unified_latents", tmp_path)


def test_sweep_smoke_writes_the_table(tmp_path):
    rows = _load("scripts/unified_latents_sweep.py", "ul_sweep").main(["--smoke", "--lambda0s", "3", "7", "--out", str(tmp_path)])
    assert [r["lambda0"] for r in rows] == [3.0, 7.0]
    assert rows[0]["sigma0"] > rows[1]["sigma0"]
    saved = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert saved == rows and (tmp_path / "sweep.md").read_text().count("\n") == 4


# ---------------------------------------------------------------- the trade-off (pytest -m slow; ~16 min on 2 cores)
@pytest.mark.slow
def test_sweep_bits_fall_as_the_latent_noise_rises(tmp_path):
    rows = _load("scripts/unified_latents_sweep.py", "ul_sweep").main(["--out", str(tmp_path)])
    bits = [r["bits_per_image"] for r in sorted(rows, key=lambda r: r["lambda0"])]  # lambda_0 = 3, 5, 7
    assert bits[0] < bits[1] < bits[2], bits  # more noise (smaller lambda_0) -> fewer bits
    psnr = [r["recon_psnr"] for r in sorted(rows, key=lambda r: r["lambda0"])]
    assert psnr[0] < psnr[2], psnr  # and coarser reconstructions
    assert min(psnr) > 16, psnr  # held-out reconstructions, MSE < 0.1 (measured 17.7 / 20.7 / 22.1 dB)
