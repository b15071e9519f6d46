"""scripts/history_stats.py: window statistics of a run's loss history, against hand-computed values and a real
smoke run's checkpoint (grad_norm is the pre-clip norm, so the fraction above the clip is how often it acted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recipe_checks import load_module, load_recipe, run_env

ROOT = Path(__file__).resolve().parents[1]


def _script():
    return load_module("scripts", "history_stats")


def test_window_stats_match_hand_computed_values():
    values = [1.0, 2.0, 3.0, 4.0, 100.0, 5.0]
    first, second = _script().window_stats(values, [0, 4, 6], above=3.5)
    assert (first["start"], first["end"], first["median"], first["max"], first["fraction_above"]) == (0, 4, 2.0, 4.0, 0.25)
    assert first["p99"] == pytest.approx(3.97)  # linear interpolation between 3 and 4 at 0.99 * 3 = 2.97
    assert (second["median"], second["max"], second["fraction_above"]) == (5.0, 100.0, 1.0)
    for bad in ([0, 7], [4, 0], [0], [], [0, 0, 6], [-1, 3]):
        with pytest.raises(ValueError, match="window edges"):
            _script().window_stats(values, bad, above=0.0)


def test_a_clipped_smoke_run_reports_its_pre_clip_norms(tmp_path):
    load_recipe("alphaflow").main(["--smoke", "--steps", "4", "--grad-clip", "1e-3", "--out", str(tmp_path / "run")])
    out = tmp_path / "stats.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "history_stats.py"), str(tmp_path / "run"), "--key", "grad_norm",
                    "--above", "1e-3", "--json", str(out)], check=True, env=run_env(), capture_output=True)
    (row,) = json.loads(out.read_text())["runs"][str(tmp_path / "run")]
    assert (row["start"], row["end"]) == (0, 4) and row["fraction_above"] == 1.0 and row["median"] > 1e-3
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "history_stats.py"), str(tmp_path / "run"), "--key", "nope"],
                             env=run_env(), capture_output=True, text=True)
    assert missing.returncode != 0 and "no 'nope'" in missing.stderr
