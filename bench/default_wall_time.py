"""Each recipe's default run's wall clock, projected from two short runs of that default: the 10-minute check.

For a recipe whose default trains S steps, this script runs the default twice with only the step count
changed (and, for the long run, a tiny evaluation):

    W(n0)  wall clock of the whole process at n0 steps, default evaluation included
    slope  (T(n1) - T(n0)) / (n1 - n0), T the ``train_seconds`` the recipe writes

and prints W(S) ~ W(n0) + (S - n0) slope. A recipe that compiles by default (--compile) runs n0 steps a second
time for T(n0): torch.compile's on-disk cache makes the later compilations faster than the first, and the
slope must compare two runs that compiled alike (with the first run's T(n0), meanflow's slope came out at
9.5 ms per step instead of about 40). Start-up, the teacher's loading, pair generation and the default
evaluation are in W(n0); the training steps' cost is in the slope. Schedules laid on --steps (lr decay,
curricula, warm-up fractions) shrink with it, so the slope averages over the same phases as the default.
Run it alone on an idle machine with the thread count the contract names:

    OMP_NUM_THREADS=2 python bench/default_wall_time.py --json bench/out/default_wall_time.json
    OMP_NUM_THREADS=2 python bench/default_wall_time.py --recipes uaimf imf --json bench/out/default_wall_time.json --append

A recipe given with flags ("imf --aux-head-depth 4") is timed with those flags on both runs, beside the others in the
same process; its row carries the flags and, when the recipe's default was timed earlier in the same invocation, the
ratio of their ms per step (--append keeps rows by recipe and flags together):

    OMP_NUM_THREADS=2 python bench/default_wall_time.py --recipes imf "imf --aux-head-depth 4" --json bench/out/variant_wall_time.json

Distillation recipes use the teacher in runs/fm (or runs/fm_<toy>), as their defaults do; training that
teacher is fm.py's own default run, timed on its own row.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flowcore import experiment

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MINUTES = 10.0
STEP_FLAGS = {"rectified_flow": ("steps", "distill_steps")}
"""Step-count flags scaled together (rectified_flow: each reflow round and the distillation; both default to 3000)."""


def recipe_defaults(recipe: str, flags: list[str] | None = None) -> argparse.Namespace:
    """The recipe's parsed arguments with ``flags`` (its own ``parse``; no flags: its defaults)."""
    return experiment.load_recipe(recipe).parse(list(flags or []))


def split_spec(spec: str) -> tuple[str, list[str]]:
    """"imf --aux-head-depth 4" -> ("imf", ["--aux-head-depth", "4"]): a recipe and the flags it is timed with."""
    words = shlex.split(spec)
    if not words or words[0].startswith("-"):
        raise SystemExit(f"--recipes: each entry starts with a recipe name, got {spec!r}")
    return words[0], words[1:]


def step_ratios_to_default(rows: list[dict]) -> list[dict]:
    """Each flagged row with ``step_ratio_to_default``, its ms per step over that of its recipe's default row among ``rows``
    (rows timed in one invocation; a flagged row whose default was not timed gets none)."""
    default_ms = {r["recipe"]: r["ms_per_step"] for r in rows if not r["flags"]}
    return [{**r, "step_ratio_to_default": r["ms_per_step"] / default_ms[r["recipe"]]} if r["flags"] and r["recipe"] in default_ms else r
            for r in rows]


def run_recipe(recipe: str, steps: int, out: Path, extra: list[str]) -> tuple[float, float]:
    """(wall seconds of the process, its train_seconds) of ``recipe`` with every step flag set to ``steps``."""
    step_flags = [a for name in STEP_FLAGS.get(recipe, ("steps",)) for a in (f"--{name.replace('_', '-')}", str(steps))]
    cmd = [sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *step_flags, "--ckpt-every", str(10 ** 9), "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - start
    return wall, json.loads((out / "metrics.json").read_text())["train_seconds"]


def projected_wall_seconds(wall_short: float, train_short: float, train_long: float, short: int, long: int, steps: int) -> float:
    """W(S) = W(n0) + (S - n0) (T(n1) - T(n0)) / (n1 - n0)."""
    return wall_short + (steps - short) * (train_long - train_short) / (long - short)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=None,
                   help="recipes to time, each optionally quoted with its flags, as \"imf --aux-head-depth 4\" (default: every file in recipes/)")
    p.add_argument("--short", type=int, default=20, help="steps of the short run, default evaluation (default: %(default)s)")
    p.add_argument("--long", type=int, default=220, help="steps of the long run, tiny evaluation (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--append", action="store_true", help="keep the rows already in --json (same threads and step counts) of recipes this run does not time")
    args = p.parse_args()
    if args.append and args.json is None:
        raise SystemExit("--append needs --json (the file whose rows it keeps)")
    if not 0 < args.short < args.long:
        raise SystemExit(f"need 0 < --short < --long, got {args.short} and {args.long}")
    specs = [split_spec(spec) for spec in args.recipes or sorted(f.stem for f in (ROOT / "recipes").glob("*.py"))]
    missing = [r for r, _ in specs if not (ROOT / "recipes" / f"{r}.py").is_file()]
    if missing:
        raise SystemExit(f"no such recipes: {missing}")
    parsed_specs = [(recipe, flags, recipe_defaults(recipe, flags)) for recipe, flags in specs]  # bad flags fail before any timing
    report = {"threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)), "short": args.short, "long": args.long,
              "budget_minutes": BUDGET_MINUTES, "rows": []}
    kept: list[dict] = []
    if args.append and args.json and args.json.is_file():
        earlier = json.loads(args.json.read_text())
        settings = ("threads", "short", "long", "budget_minutes")
        if any(earlier.get(k) != report[k] for k in settings):
            raise SystemExit(f"--append: {args.json} was measured with other settings: {({k: earlier.get(k) for k in settings})}")
        timed = {(r, shlex.join(f)) for r, f in specs}
        kept = [row for row in earlier["rows"] if (row["recipe"], row.get("flags", "")) not in timed]
    timed_now: list[dict] = []
    for recipe, flags, parsed in parsed_specs:
        with tempfile.TemporaryDirectory() as tmp:
            wall_short, train_short = run_recipe(recipe, args.short, Path(tmp) / "short", flags)
            if getattr(parsed, "compile", False):  # the long run compiles from the warm cache: time the short one so too
                _, train_short = run_recipe(recipe, args.short, Path(tmp) / "short_warm", [*flags, "--eval-samples", "64"])
            _, train_long = run_recipe(recipe, args.long, Path(tmp) / "long", [*flags, "--eval-samples", "64"])
        minutes = projected_wall_seconds(wall_short, train_short, train_long, args.short, args.long, parsed.steps) / 60
        row = {"recipe": recipe, "flags": shlex.join(flags), "steps": parsed.steps, "ms_per_step": 1e3 * (train_long - train_short) / (args.long - args.short),
               "wall_seconds_short": wall_short, "projected_minutes": minutes, "within_budget": minutes <= BUDGET_MINUTES}
        timed_now.append(row)
        report["rows"] = sorted(kept + step_ratios_to_default(timed_now), key=lambda r: (r["recipe"], r.get("flags", "")))
        print(f"{shlex.join([recipe, *flags]):16s} {parsed.steps:6d} steps x {row['ms_per_step']:7.1f} ms + {wall_short:6.1f} s at {args.short} steps"
              f" -> {minutes:5.1f} min {'ok' if row['within_budget'] else 'OVER'}", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
