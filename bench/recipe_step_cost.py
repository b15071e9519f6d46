"""Each recipe's training-step time relative to a flow-matching step, measured by running the recipes.

Every recipe is run as shipped (its own loss, derivative back end and optimizer) on the same data,
model, width and batch as ``recipes/fm.py``. A recipe's time per step is the slope between a short
and a longer run, (T(long) - T(short)) / (long - short) from the ``train_seconds`` each run writes,
so start-up, warm-up and the final checkpoint cancel. Each recipe's runs alternate with FM runs and
the median of --repeats slopes of each is reported: the ratios come from one run of this script, side
by side. rectified_flow is not timed here: its phases (reflow rounds, distillation) are FM steps on
generated pairs.

    python bench/recipe_step_cost.py                        # every recipe found, MLP and DiT
    python bench/recipe_step_cost.py --recipes meanflow pmf --json bench/out/recipe_step_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DERIVATIVES = {
    "meanflow": ("jvp", "fd", "fused"), "pmf": ("jvp", "fd", "fused"), "imf": ("jvp", "fd", "fused"),
    "alphaflow": ("jvp", "fd", "fused"), "uaimf": ("jvp", "fd", "fused"), "dmf": ("jvp", "fd", "fused"),
    "tvm": ("jvp", "fd", "fused"), "scm": ("jvp", "fd", "fused"),
    "freeflow": ("jvp", "fd", "fused"), "metaflow": ("jvp", "fd", "fused"), "jit": (None,), "cm": (None,),
}
"""Recipes and the --derivative back ends each is timed with (None: the recipe takes no derivative)."""
DATA = {"metaflow": "eight_gaussians"}
"""Recipes timed on other data than the digits (metaflow needs a mixture with an exact posterior); the FM step
they are compared with runs on the same data and network. They are 2D: timed on the MLP only."""
DISTILLERS = ("dmf", "scm", "cm", "freeflow")
"""Recipes that load an FM teacher: each is given one of the timed model's own architecture (its weights
do not change a step's cost), so the teacher's forward costs what it would in a real run on that model."""
TINY_EVALUATION = {"metaflow": ["--posterior-points", "1", "--posterior-samples", "64"]}
"""Evaluation flags beyond --eval-samples that keep a timed run's evaluation tiny (it is outside train_seconds, but slow)."""
MODELS = {"mlp": ["--model", "mlp", "--width", "512", "--depth", "4"], "dit": ["--model", "dit", "--width", "128", "--depth", "4"]}
SAME_MODEL = {("jit", "dit"): ["--patch", "2"], ("imf", "mlp"): ["--aux-head-depth", "0"], ("imf", "dit"): ["--aux-head-depth", "0"]}
"""Flags that make a recipe's own network the FM step's: jit.py's DiT defaults to 4x4 patches, FM's to 2x2; imf's v-head
defaults to blocks of its own (4 more blocks), timed against its shared trunk in bench/default_wall_time.py's variant table."""


def train_seconds(recipe: str, flags: list[str], steps: int) -> float:
    """train_seconds of one run of ``recipe`` with ``flags`` for ``steps`` steps (tiny evaluation)."""
    with tempfile.TemporaryDirectory() as out:
        return train_seconds_into(Path(out), recipe, flags, steps)


def train_seconds_into(out: Path, recipe: str, flags: list[str], steps: int) -> float:
    """train_seconds of one run of ``recipe`` written to ``out`` (tiny evaluation, one checkpoint at the end)."""
    cmd = [sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *flags, "--steps", str(steps), "--ckpt-every", str(10 ** 9),
           "--eval-samples", "64", *TINY_EVALUATION.get(recipe, []), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())["train_seconds"]


def same_model_teacher(flags: list[str], out: Path) -> list[str]:
    """--teacher flags naming an FM checkpoint of the model in ``flags``, trained for 1 step into ``out``."""
    train_seconds_into(out, "fm", flags, 1)
    return ["--teacher", str(out / "checkpoint.safetensors")]


def seconds_per_step(recipe: str, flags: list[str], short: int, long: int) -> float:
    return (train_seconds(recipe, flags, long) - train_seconds(recipe, flags, short)) / (long - short)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=None, help="recipes to time (default: every one in recipes/ listed in DERIVATIVES)")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--short", type=int, default=10, help="steps of the short run (default: %(default)s)")
    p.add_argument("--long", type=int, default=60, help="steps of the long run (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--append", action="store_true", help="keep the rows already in --json (same batch, threads and step counts) that this run does not time")
    args = p.parse_args()
    recipes = args.recipes or [r for r in DERIVATIVES if (ROOT / "recipes" / f"{r}.py").is_file()]
    unknown = [r for r in recipes if r not in DERIVATIVES]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; known: {sorted(DERIVATIVES)}")
    report: dict = {"batch": args.batch, "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)),
                    "short": args.short, "long": args.long, "rows": []}
    if args.append and args.json and args.json.is_file():
        earlier = json.loads(args.json.read_text())
        if {k: earlier.get(k) for k in ("batch", "threads", "short", "long")} != {k: report[k] for k in ("batch", "threads", "short", "long")}:
            raise SystemExit(f"--append: {args.json} was measured with other settings: {({k: earlier.get(k) for k in ('batch', 'threads', 'short', 'long')})}")
        timed = {(m, r) for m in args.models for r in recipes}
        report["rows"] = [row for row in earlier["rows"] if (row["model"], row["recipe"]) not in timed]
    with tempfile.TemporaryDirectory() as teachers:
        for model in args.models:
            digits = ["--data", "digits", "--batch", str(args.batch), *MODELS[model]]
            teacher = same_model_teacher(digits, Path(teachers) / model) if set(recipes) & set(DISTILLERS) else []
            for recipe in recipes:
                if recipe in DATA and model != "mlp":
                    continue
                base = ["--data", DATA.get(recipe, "digits"), *digits[2:]]
                for derivative in DERIVATIVES[recipe]:
                    if derivative == "fused" and model == "mlp":
                        continue
                    flags = (base + (["--derivative", derivative] if derivative else []) + (teacher if recipe in DISTILLERS else [])
                             + SAME_MODEL.get((recipe, model), []))
                    fm, ts = [], []
                    for _ in range(args.repeats):  # FM and the recipe alternate, so load hits both alike
                        fm.append(seconds_per_step("fm", base, args.short, args.long))
                        ts.append(seconds_per_step(recipe, flags, args.short, args.long))
                    row = {"model": model, "recipe": recipe, "derivative": derivative or "-", "ms_per_step": 1e3 * statistics.median(ts),
                           "fm_ms_per_step": 1e3 * statistics.median(fm), "ratio_to_fm": statistics.median(ts) / statistics.median(fm)}
                    report["rows"].append(row)
                    print(f"{model:4s} {recipe:15s} {row['derivative']:6s} {row['ms_per_step']:8.1f} ms/step  x{row['ratio_to_fm']:.2f} of FM ({row['fm_ms_per_step']:.1f} ms)", flush=True)
                    if args.json:
                        args.json.parent.mkdir(parents=True, exist_ok=True)
                        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
