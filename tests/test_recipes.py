"""Recipes: --smoke runs for every derivative back end, --help, exact --resume, bad flags, torchrun."""

from __future__ import annotations

import json

import pytest
import torch

from tests.recipe_checks import assert_help_lists, assert_resume_is_exact, assert_runs_under_torchrun, load_recipe, random_fp64_digits_model

RECIPES = ["fm", "meanflow", "pmf"]


@pytest.mark.parametrize("name,extra", [
    ("fm", []), ("fm", ["--data", "checkerboard"]),
    ("meanflow", ["--derivative", "jvp"]), ("meanflow", ["--derivative", "fd", "--data", "digits"]),
    ("meanflow", ["--model", "dit", "--data", "digits", "--derivative", "fused"]),
    ("pmf", ["--derivative", "jvp"]), ("pmf", ["--derivative", "fd"]), ("pmf", ["--model", "dit", "--derivative", "fused"]),
    ("pmf", ["--aux-head-depth", "1"]),
])
def test_smoke_writes_every_output(name, extra, tmp_path):
    results = load_recipe(name).main(["--smoke", "--out", str(tmp_path), *extra])
    files = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "metrics.json", "config.json", "loss.png"} <= files
    assert any(f.startswith("samples_") and f.endswith(".png") for f in files)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["results"].keys() == results.keys() and "floor" in results
    for row in results.values():
        assert all(v == v for v in row.values())  # no NaN metric


def test_meanflow_defaults_follow_the_data_and_yield_to_flags():
    """digits: the paper's p = 1, logit-normal times, constant lr, raw input, eager, v-prediction; 2D: p = 0, uniform times,
    lr decay 0.3, 64 Fourier features, compiled (not with --smoke), x-prediction; a flag wins."""
    mf = load_recipe("meanflow")
    pick = lambda a: (a.p, a.uniform_fraction, a.lr_decay, a.fourier_features, a.compile, a.prediction.value)  # noqa: E731
    assert pick(mf.parse(["--data", "digits"])) == pick(mf.parse(["--data", "digits", "--model", "dit"])) == (1.0, 0.0, 0.0, 0, False, "v")
    assert pick(mf.parse([])) == pick(mf.parse(["--data", "moons"])) == (0.0, 1.0, 0.3, 64, True, "x")
    assert pick(mf.parse(["--p", "1", "--lr-decay", "0", "--fourier-features", "0", "--no-compile", "--prediction", "v"])) == (1.0, 1.0, 0.0, 0, False, "v")
    assert not mf.parse(["--smoke"]).compile and mf.parse(["--smoke", "--compile"]).compile
    with pytest.raises(SystemExit, match="--uniform-fraction"):
        mf.parse(["--uniform-fraction", "2"])


def test_meanflow_x_prediction_jumps_are_ddim_steps_to_the_networks_x():
    """Under x-prediction u = (z - x_hat)/t, so a jump from t to s is z_s = (s/t) z + (1 - s/t) x_hat(z, t, s): the 1-NFE
    sample is x_hat(eps, 1, 0), the 2-NFE sample x_hat(z_1/2, 1/2, 0) with z_1/2 = (eps + x_hat(eps, 1, 1/2))/2."""
    import torch
    from flowcore import experiment
    mf = load_recipe("meanflow")
    source = experiment.load_source("checkerboard")
    torch.manual_seed(0)
    net = experiment.build_model(experiment.ModelKind.MLP, source, width=32, depth=2, fourier_features=8).double().eval()
    gens = mf.generators(net, mf.parse([]), source)
    eps = torch.randn(64, 2, dtype=torch.float64)
    at = lambda v: torch.full((64,), v, dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(gens["1nfe"](eps, None), net(eps, at(1.0), at(0.0), None), rtol=1e-12, atol=1e-12)
        z_half = 0.5 * (eps + net(eps, at(1.0), at(0.5), None))
        torch.testing.assert_close(gens["2nfe"](eps, None), net(z_half, at(0.5), at(0.0), None), rtol=1e-12, atol=1e-12)
        v_gens = mf.generators(net, mf.parse(["--prediction", "v"]), source)
        torch.testing.assert_close(v_gens["1nfe"](eps, None), eps - net(eps, at(1.0), at(0.0), None), rtol=1e-12, atol=1e-12)


def test_meanflow_compiled_step_trains_like_the_eager_one(tmp_path):
    """--compile (torch.compile of the JVP and the loss) changes nothing but rounding: over 4 steps the loss
    history matches the eager run's to 1e-4 relative (a wrong tangent would change the first loss through the
    target; a lost stop-gradient, the later ones through the updates)."""
    from safetensors import safe_open
    histories = {}
    for flag in ("--compile", "--no-compile"):
        out = tmp_path / flag.strip("-")
        load_recipe("meanflow").main(["--smoke", flag, "--steps", "4", "--out", str(out)])
        with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as f:
            histories[flag] = json.loads(f.metadata()["history"])["loss"]
    assert len(histories["--compile"]) == 4
    assert histories["--compile"] == pytest.approx(histories["--no-compile"], rel=1e-4)
    assert histories["--compile"][0] != histories["--compile"][3]


@pytest.mark.parametrize("name", RECIPES)
def test_help_lists_flags(name):
    assert_help_lists(name, "--smoke", "--resume", "--out")


@pytest.mark.parametrize("name", ["fm", "pmf"])
def test_resume_continues_exactly(name, tmp_path):
    assert_resume_is_exact(name, tmp_path)


def test_bad_flags_are_named(tmp_path):
    with pytest.raises(SystemExit, match="--data digits"):
        load_recipe("pmf").main(["--smoke", "--data", "checkerboard", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--steps"):
        load_recipe("fm").main(["--smoke", "--steps", "0", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_recipe("fm").main(["--smoke", "--resume", "--out", str(tmp_path / "empty")])


def test_pmf_generators_read_the_u_head_as_an_image_in_fp64():
    """pMF's 1-NFE sample is the u-head's x at (eps, 1, 0) with the guidance input 1 - 1/omega; the generators follow the
    sample's dtype (an fp64 model and noise, compared at 1e-12), and --prediction v samples eps - u."""
    from flowcore import guidance
    pmf = load_recipe("pmf")
    args = pmf.parse(["--smoke", "--omega", "1.5"])
    net, source = random_fp64_digits_model(pmf, args)
    eps, y = torch.randn(8, *source.shape, dtype=torch.float64), torch.arange(8) % 10
    at = lambda v: torch.full((8,), v, dtype=torch.float64)  # noqa: E731
    c = guidance.guidance_feature(at(1.5))[:, None]
    with torch.no_grad():
        x_u = net(eps, at(1.0), at(0.0), y, c)[0]
        torch.testing.assert_close(pmf.generators(net, args, source)["1nfe"](eps, y), x_u, rtol=1e-12, atol=1e-12)
        v_args = pmf.parse(["--smoke", "--omega", "1.5", "--prediction", "v"])
        torch.testing.assert_close(pmf.generators(net, v_args, source)["1nfe"](eps, y), eps - x_u, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", RECIPES)
def test_runs_unchanged_under_torchrun(name, tmp_path):
    assert_runs_under_torchrun(name, tmp_path)
    assert (tmp_path / "metrics.json").is_file()
