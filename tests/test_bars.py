"""`pytest -m slow`: run the default recipes (each at most 10 minutes on 2 cores) and assert the
quality bars of issue 2 (digits FD as means of 5 noise draws, as the README's bars). The same numbers reach the README through
scripts/reproduce.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recipe_checks import mean_fd_over_draws

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("default_runs")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = set()

    def run(label: str, recipe: str, *flags: str) -> Path:
        """The folder of a finished run (trained once per module)."""
        out = base / label
        if label not in done:
            subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "--out", str(out), *flags], check=True, env=env)
            done.add(label)
        return out

    return run


def _results(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["results"]


def test_meanflow_one_step_on_checkerboard(runs):
    teacher = _results(runs("fm_checkerboard", "fm", "--data", "checkerboard"))
    student = _results(runs("meanflow", "meanflow"))
    teacher_sw2 = min(teacher["euler100"]["sw2"], teacher["heun100"]["sw2"])
    assert student["1nfe"]["sw2"] <= 1.5 * teacher_sw2
    assert student["1nfe"]["sw2"] <= 2.0 * student["floor"]["sw2"]


def test_pixel_meanflow_one_step_on_digits(runs):
    """1-NFE FD within 1.5x of the FM teacher's, both as means of 5 noise draws (README, "How to read a digits FD")."""
    teacher, student = runs("fm", "fm"), runs("pmf", "pmf")
    teacher_fd = min(mean_fd_over_draws(teacher, g) for g in ("euler50", "heun50"))
    assert mean_fd_over_draws(student, "1nfe") <= 1.5 * teacher_fd
    results = _results(student)
    assert results["1nfe"]["class_acc"] >= 0.90
    assert results["2nfe"]["fd"] <= results["1nfe"]["fd"] * 1.1


def test_meanflow_step_cost():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "step_cost.py"), "--json", "/dev/stdout", "--repeats", "15"],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    rows = json.loads(out.stdout[out.stdout.index("{"):])["rows"]
    for row in rows:
        assert min(v for k, v in row.items() if k.startswith("ratio_")) <= 1.7, row
