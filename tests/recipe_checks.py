"""Shared recipe-test checks: --help lists flags, exact --resume, and a torchrun smoke run.

A plain helper module (not collected by pytest); tests import it as `from tests.recipe_checks import ...`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]


def load_module(folder: str, name: str):
    """Import ROOT/<folder>/<name>.py (recipes and scripts are files, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_recipe(name: str):
    return load_module("recipes", name)


def random_fp64_digits_model(recipe, args):
    """A width-16 fp64 model of ``recipe``'s architecture for ``args`` (its ``model_options`` and --depth) on digits, with
    every parameter drawn from N(0, 0.3^2), the zero-initialised output layers included, so that each head depends on
    every input; returns (model, source). For exact generator checks in fp64."""
    import torch

    from flowcore import experiment
    source = experiment.load_source("digits")
    torch.manual_seed(0)
    net = experiment.build_model(args.model, source, width=16, depth=args.depth, **recipe.model_options(args)).double().eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return net, source


def load_script(name: str):
    return load_module("scripts", name)


FM_TEACHER_FD_MEAN = 0.992
"""The FM teacher's (runs/fm, recipes/fm.py) Heun-50 FD as the mean of 5 noise draws, measured by scripts/fd_draws.py (runs/fd_draws.json):
the digits bars' denominator (README, "How to read a digits FD")."""


def mean_fd_over_draws(run: Path, generator: str, draws: int = 5) -> float:
    """The mean FD of one generator of a finished digits run over ``draws`` noise draws (scripts/fd_draws.py), the digits bars' reading."""
    fd_draws = load_script("fd_draws")
    generators, config = fd_draws.load_run(run)
    fds = fd_draws.fd_draws({generator: generators[generator]}, draws, config["seed"], config.get("eval_samples"))[generator]
    return sum(fds) / len(fds)


def run_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if not k.startswith("rng/")}, f.metadata()


def assert_help_lists(name: str, *flags: str) -> str:
    """`recipes/<name>.py --help` exits 0 and its output names every flag; returns the output."""
    out = subprocess.run([sys.executable, str(ROOT / "recipes" / f"{name}.py"), "--help"],
                         capture_output=True, text=True, env=run_env(), check=True)
    for flag in flags:
        assert flag in out.stdout, flag
    return out.stdout


def assert_resume_is_exact(name: str, tmp_path: Path, extra=(), steps=(3, 6)) -> tuple[dict, dict]:
    """Run `steps[1]` steps straight vs `steps[0]` then --resume to `steps[1]`; the checkpoints' tensors and
    history must match exactly. Returns both (tensors, metadata) of the straight run and of the split run as
    ((a, meta_a), (b, meta_b)) so callers can assert more."""
    first, total = steps
    recipe = load_recipe(name)
    recipe.main(["--smoke", "--steps", str(total), "--out", str(tmp_path / "straight"), *extra])
    recipe.main(["--smoke", "--steps", str(first), "--out", str(tmp_path / "split"), *extra])
    recipe.main(["--smoke", "--steps", str(total), "--resume", "--out", str(tmp_path / "split"), *extra])
    a, meta_a = read_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    b, meta_b = read_checkpoint(tmp_path / "split" / "checkpoint.safetensors")
    assert json.loads(meta_a["history"]) == json.loads(meta_b["history"])
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key
    return (a, meta_a), (b, meta_b)


def assert_runs_under_torchrun(name: str, tmp_path: Path, extra=()) -> dict:
    """`torchrun --nproc_per_node=2 recipes/<name>.py --smoke` succeeds and writes a world_size-2 checkpoint;
    returns the checkpoint metadata."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "recipes" / f"{name}.py"), "--smoke", "--out", str(tmp_path), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=run_env(), timeout=300)
    tb = proc.stderr.find("Traceback")
    assert proc.returncode == 0, proc.stderr[tb:tb + 4000] if tb >= 0 else proc.stderr[-4000:]
    assert (tmp_path / "checkpoint.safetensors").is_file()
    _, meta = read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["world_size"] == "2"
    return meta
