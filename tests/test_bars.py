"""`pytest -m slow`: run the default recipes (each at most 10 minutes on 2 cores) and assert the
quality bars of issue 2. The same numbers reach the README through scripts/reproduce.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("default_runs")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = {}

    def run(label: str, recipe: str, *flags: str) -> dict:
        if label not in done:
            out = base / label
            subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "--out", str(out), *flags], check=True, env=env)
            done[label] = json.loads((out / "metrics.json").read_text())["results"]
        return done[label]

    return run


def test_meanflow_one_step_on_checkerboard(runs):
    teacher = runs("fm_checkerboard", "fm", "--data", "checkerboard")
    student = runs("meanflow", "meanflow")
    teacher_sw2 = min(teacher["euler100"]["sw2"], teacher["heun100"]["sw2"])
    assert student["1nfe"]["sw2"] <= 1.5 * teacher_sw2
    assert student["1nfe"]["sw2"] <= 2.0 * student["floor"]["sw2"]


def test_pixel_meanflow_one_step_on_digits(runs):
    teacher = runs("fm", "fm")
    student = runs("pmf", "pmf")
    teacher_fd = min(teacher["euler50"]["fd"], teacher["heun50"]["fd"])
    assert student["1nfe"]["fd"] <= 1.5 * teacher_fd
    assert student["1nfe"]["class_acc"] >= 0.90
    assert student["2nfe"]["fd"] <= student["1nfe"]["fd"] * 1.1


def test_meanflow_step_cost():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "step_cost.py"), "--json", "/dev/stdout", "--repeats", "15"],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    rows = json.loads(out.stdout[out.stdout.index("{"):])["rows"]
    for row in rows:
        assert min(v for k, v in row.items() if k.startswith("ratio_")) <= 1.7, row
