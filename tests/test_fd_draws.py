"""scripts/fd_draws.py: its first noise draw must reproduce each recipe's own evaluation exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.recipe_checks import ROOT, load_script, run_env

SCRIPT = ROOT / "scripts" / "fd_draws.py"


@pytest.mark.parametrize(("recipe", "extra"), [("fm", []), ("uaimf", []), ("pmf", []), ("pmf", ["--prediction", "v"]), ("pmf", ["--prediction", "eps"]), ("imf", []),
                                               ("tvm", []), ("dmf", []), ("freeflow", [])])
def test_first_draw_is_the_recipes_own_fd(recipe, extra, tmp_path):
    """Rebuilding the network from config.json and the checkpoint and sampling it through the recipe's own
    generators gives, on draw 0, the FD the recipe wrote (a network built without the recipe's model options
    would not load; a wrong guidance input or parameterisation would not match)."""
    out = tmp_path / recipe
    subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "--smoke", "--steps", "3", "--out", str(out), *extra],
                   check=True, capture_output=True, env=run_env())
    fd_draws = load_script("fd_draws")
    generators, config = fd_draws.load_run(out)
    written = json.loads((out / "metrics.json").read_text())["results"]
    fds = fd_draws.fd_draws({k: g for k, g in generators.items() if k in written}, 2, config["seed"], config.get("eval_samples"))
    assert any(k == "1nfe" or k.startswith("heun") for k in fds)
    for k, (first, second) in fds.items():
        assert first == pytest.approx(written[k]["fd"], rel=1e-6), k
        assert second != first  # an independent draw


def test_refuses_runs_it_cannot_score(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "has no config.json: not a finished run" in out.stderr
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--draws", "1"], capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "--draws must be >= 2" in out.stderr


def test_set_rescores_with_a_sampling_flag_changed(tmp_path):
    """--set t_min=... changes imf's interval input, so its samples move; the run's own value leaves them bit-identical;
    flags the recipe lacks, non-numeric flags and recipes without generators of their own are refused by name."""
    import torch
    out = tmp_path / "imf"
    # the raw weights (--ema 0) after a few large steps: the EMA of a 6-step run is still the zero-initialised output layer
    subprocess.run([sys.executable, str(ROOT / "recipes" / "imf.py"), "--smoke", "--ema", "0", "--lr", "0.01", "--out", str(out)],
                   check=True, capture_output=True, env=run_env())
    fd_draws = load_script("fd_draws")
    eps, y = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 10

    def samples(overrides: dict[str, str]) -> torch.Tensor:
        return fd_draws.load_run(out, overrides)[0]["1nfe"](eps, y)

    own = samples({})
    assert torch.equal(samples({"omega": "1"}), own)  # imf's default omega, the run's own
    assert (samples({"t_min": "0.1", "t_max": "0.9"}) - own).abs().max() > 1e-4
    assert fd_draws.parse_overrides(["t_min=0.4", "omega=2"]) == {"t_min": "0.4", "omega": "2"}
    for bad, message in (({"no_such_flag": "1"}, "has no flag"), ({"prediction": "x"}, "numeric flags only")):
        with pytest.raises(SystemExit, match=message):
            fd_draws.load_run(out, bad)
    with pytest.raises(SystemExit, match="FLAG=VALUE"):
        fd_draws.parse_overrides(["t_min"])


def test_a_config_from_before_a_flag_existed_is_rebuilt_with_the_value_it_stood_for(tmp_path):
    """imf's --aux-head-depth now defaults to 4; a run whose config.json predates the flag had no aux blocks and must load
    as aux_head_depth 0 (with the current default its checkpoint lacks the aux blocks and strict loading fails)."""
    import torch
    out = tmp_path / "imf"
    # raw weights after a few large steps, so that the samples depend on every block (the EMA of a short run barely moves)
    subprocess.run([sys.executable, str(ROOT / "recipes" / "imf.py"), "--smoke", "--ema", "0", "--lr", "0.01", "--aux-head-depth", "0",
                    "--out", str(out)], check=True, capture_output=True, env=run_env())
    fd_draws = load_script("fd_draws")
    eps, y = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 10
    before = fd_draws.load_run(out)[0]["1nfe"](eps, y)
    config = json.loads((out / "config.json").read_text())
    del config["aux_head_depth"]
    (out / "config.json").write_text(json.dumps(config))
    assert fd_draws.FLAGS_BEFORE_THEY_EXISTED["aux_head_depth"] == 0
    assert torch.equal(fd_draws.load_run(out)[0]["1nfe"](eps, y), before)  # the same network and weights as with the flag written out
