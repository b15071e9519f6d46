"""Recipes: --smoke runs for every derivative back end, --help, exact --resume, bad flags, torchrun."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["fm", "meanflow", "pmf"]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _checkpoint(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if not k.startswith("rng/")}, f.metadata()


@pytest.mark.parametrize("name,extra", [
    ("fm", []), ("fm", ["--data", "checkerboard"]),
    ("meanflow", ["--derivative", "jvp"]), ("meanflow", ["--derivative", "fd", "--data", "digits"]),
    ("meanflow", ["--model", "dit", "--data", "digits", "--derivative", "fused"]),
    ("pmf", ["--derivative", "jvp"]), ("pmf", ["--derivative", "fd"]), ("pmf", ["--model", "dit", "--derivative", "fused"]),
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


@pytest.mark.parametrize("name", RECIPES)
def test_help_lists_flags(name):
    out = subprocess.run([sys.executable, str(ROOT / "recipes" / f"{name}.py"), "--help"], capture_output=True, text=True, env=_env(), check=True)
    assert "--smoke" in out.stdout and "--resume" in out.stdout and "--out" in out.stdout


@pytest.mark.parametrize("name", ["fm", "pmf"])
def test_resume_continues_exactly(name, tmp_path):
    recipe = load_recipe(name)
    recipe.main(["--smoke", "--steps", "6", "--out", str(tmp_path / "straight")])
    recipe.main(["--smoke", "--steps", "3", "--out", str(tmp_path / "split")])
    recipe.main(["--smoke", "--steps", "6", "--resume", "--out", str(tmp_path / "split")])
    a, meta_a = _checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    b, meta_b = _checkpoint(tmp_path / "split" / "checkpoint.safetensors")
    assert json.loads(meta_a["history"]) == json.loads(meta_b["history"])
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key


def test_bad_flags_are_named(tmp_path):
    with pytest.raises(SystemExit, match="--data digits"):
        load_recipe("pmf").main(["--smoke", "--data", "checkerboard", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--steps"):
        load_recipe("fm").main(["--smoke", "--steps", "0", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_recipe("fm").main(["--smoke", "--resume", "--out", str(tmp_path / "empty")])


@pytest.mark.parametrize("name", RECIPES)
def test_runs_unchanged_under_torchrun(name, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "recipes" / f"{name}.py"), "--smoke", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    tb = proc.stderr.find("Traceback")
    assert proc.returncode == 0, proc.stderr[tb:tb + 4000] if tb >= 0 else proc.stderr[-4000:]
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "checkpoint.safetensors").is_file()
    _, meta = _checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["world_size"] == "2"
