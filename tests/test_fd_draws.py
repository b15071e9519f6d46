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
