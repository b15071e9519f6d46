"""bench/default_wall_time.py: the projection of a default run's wall clock from two short runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.recipe_checks import ROOT, load_module, load_recipe

SCRIPT = ROOT / "bench" / "default_wall_time.py"


def load_bench():
    return load_module("bench", "default_wall_time")


def test_projection_is_exact_for_a_process_with_fixed_cost_plus_linear_steps():
    """A process costing F seconds plus c seconds per step: W(n0) = F + c n0, T(n) = c n (+ any constant),
    so the projection must return F + c S exactly."""
    bench = load_bench()
    fixed, per_step, short, long, steps = 37.0, 0.083, 20, 220, 7000
    train = lambda n: 1.5 + per_step * n  # noqa: E731  (train_seconds with a constant warm-up)
    got = bench.projected_wall_seconds(fixed + per_step * short, train(short), train(long), short, long, steps)
    assert got == pytest.approx(fixed + per_step * steps, rel=1e-12)


def test_recipe_defaults_read_each_recipes_own_step_count():
    bench = load_bench()
    assert bench.recipe_defaults("fm").steps == load_recipe("fm").parse([]).steps
    assert bench.recipe_defaults("meanflow").data == "checkerboard"


@pytest.mark.parametrize("flags,message", [(["--short", "50", "--long", "50"], "need 0 < --short < --long"),
                                           (["--recipes", "no_such_recipe"], "no such recipes"),
                                           (["--append"], "--append needs --json"),
                                           (["--recipes", "fm", "imf --aux-head-depth 9"], "--aux-head-depth must be in [0, --depth=4], got 9"),
                                           (["--recipes", "fm", ""], "each entry starts with a recipe name")])
def test_bad_flags_are_refused_by_name(flags, message):
    out = subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True, text=True, check=False)
    assert out.returncode != 0 and message in out.stderr


def test_recipe_specs_carry_flags_and_flagged_rows_divide_by_their_default():
    bench = load_bench()
    assert bench.split_spec("imf --aux-head-depth 4") == ("imf", ["--aux-head-depth", "4"]) and bench.split_spec("fm") == ("fm", [])
    rows = [{"recipe": "imf", "flags": "", "ms_per_step": 100.0}, {"recipe": "imf", "flags": "--aux-head-depth 4", "ms_per_step": 150.0},
            {"recipe": "tvm", "flags": "--width 384", "ms_per_step": 90.0}]
    ratios = [r.get("step_ratio_to_default") for r in bench.step_ratios_to_default(rows)]
    assert ratios == [None, 1.5, None]  # tvm's default was not timed alongside: no ratio


@pytest.mark.slow
def test_every_default_run_fits_ten_minutes(tmp_path):
    """The recipe contract: each default run within 10 minutes (run alone, OMP_NUM_THREADS=2, on an idle machine)."""
    out = tmp_path / "wall.json"
    subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], check=True)
    over = {r["recipe"]: round(r["projected_minutes"], 1) for r in json.loads(out.read_text())["rows"] if not r["within_budget"]}
    assert not over


def test_load_recipe_names_a_missing_recipe():
    from flowcore import experiment
    with pytest.raises(FileNotFoundError, match="no recipe 'no_such_recipe'"):
        experiment.load_recipe("no_such_recipe")
    assert experiment.load_recipe("tvm").parse([]).steps == load_recipe("tvm").parse([]).steps
