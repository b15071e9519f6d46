"""Steps-to-FD of REPA vs plain flow matching on digits: recipes/repa.py for --encoder in {none, random,
trained} x seeds {0, 1, 2} at a short budget, then, per arm, the mean +- std over seeds of the
number of training steps until the FD curve first reaches a threshold, and the final curve FD.

    python scripts/repa_steps_to_fd.py                       # 9 runs, 2 at a time (1 thread each)
    python scripts/repa_steps_to_fd.py --analyse-only        # re-read the runs in --out

Threshold: ``factor`` x the worst (highest) final curve FD among the baseline (none) seeds, that is
the quality plain flow matching reaches on every seed within the budget (REPA's framing: the steps
REPA needs to match the baseline's final quality). With the default factor 1 every baseline seed
reaches it by construction, so the baseline's mean is over all its seeds; a run of another arm that
never reaches it counts as not reached (listed, excluded from the mean). Runs whose metrics.json
exists are not repeated. Writes OUT/steps_to_fd.json.

Beside that one threshold, --levels gives the whole picture: for each FD level, the steps each arm
needs to first reach it, linearly interpolated between the curve points around the crossing (the
curve is measured every --eval-every steps), as mean +- std over the seeds that reach it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("none", "random", "trained")
BASELINE = "none"


def steps_to_threshold(steps: list[int], fds: list[float], threshold: float) -> int | None:
    """The first curve step whose FD is <= threshold, or None if the curve never gets there."""
    if len(steps) != len(fds):
        raise ValueError(f"steps and fds differ in length: {len(steps)} vs {len(fds)}")
    return next((s for s, fd in zip(steps, fds) if fd <= threshold), None)


def interpolated_steps_to_level(steps: list[int], fds: list[float], level: float) -> float | None:
    """The step where the FD curve first falls to ``level``, by linear interpolation between the last
    point above it and the first point at or below it (the first point itself if the curve starts below);
    None if the curve never gets there."""
    if len(steps) != len(fds):
        raise ValueError(f"steps and fds differ in length: {len(steps)} vs {len(fds)}")
    for i, (s, fd) in enumerate(zip(steps, fds)):
        if fd <= level:
            if i == 0:
                return float(s)
            s0, f0 = steps[i - 1], fds[i - 1]
            return s0 + (s - s0) * (f0 - level) / (f0 - fd)
    return None


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def level_table(curves: dict[str, list[dict]], levels: list[float]) -> list[dict]:
    """Per FD level: per arm, the interpolated steps-to-level of each seed (None = not reached) and
    their mean and std over the seeds that reach it."""
    rows = []
    for level in levels:
        row: dict = {"level": level, "arms": {}}
        for arm, runs in curves.items():
            reached = [interpolated_steps_to_level(c["step"], c["fd"], level) for c in runs]
            mean, std = _mean_std([r for r in reached if r is not None])
            row["arms"][arm] = {"steps": reached, "mean": mean, "std": std}
        rows.append(row)
    return rows


def summarize(curves: dict[str, list[dict]], factor: float) -> dict:
    """``curves``: arm -> list over seeds of {"step": [...], "fd": [...]}. Returns the threshold and,
    per arm, steps-to-threshold per seed (None = not reached), their mean and std over the seeds
    that reached it, the count reached, and the mean and std of the final FD."""
    if BASELINE not in curves or not curves[BASELINE]:
        raise ValueError(f"the baseline arm {BASELINE!r} has no runs")
    threshold = factor * max(c["fd"][-1] for c in curves[BASELINE])
    arms = {}
    for arm, runs in curves.items():
        reached = [steps_to_threshold(c["step"], c["fd"], threshold) for c in runs]
        done = [float(s) for s in reached if s is not None]
        steps_mean, steps_std = _mean_std(done)
        final_mean, final_std = _mean_std([c["fd"][-1] for c in runs])
        arms[arm] = {"steps_to_fd": reached, "steps_mean": steps_mean, "steps_std": steps_std, "reached": len(done), "runs": len(runs),
                     "final_fd_mean": final_mean, "final_fd_std": final_std}
    return {"threshold_factor": factor, "threshold_fd": threshold, "arms": arms}


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm}_seed{seed}"


def train_one(arm: str, seed: int, args: argparse.Namespace, extra: list[str]) -> None:
    folder = run_dir(args.out, arm, seed)
    if (folder / "metrics.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        if (config["encoder"], config["seed"], config["steps"], config["eval_every"]) != (arm, seed, args.steps, args.eval_every):
            raise SystemExit(f"{folder} holds a run with other settings; pick another --out or delete it")
        return
    cmd = [sys.executable, str(ROOT / "recipes" / "repa.py"), "--encoder", arm, "--seed", str(seed), "--steps", str(args.steps),
           "--eval-every", str(args.eval_every), "--curve-samples", str(args.curve_samples), "--eval-samples", str(args.eval_samples),
           "--ode-steps", str(args.ode_steps), "--out", str(folder), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "log.txt", "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"done: {arm} seed {seed}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "repa_steps_to_fd")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=700, help="training steps per run (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=70, help="FD-curve period (default: %(default)s)")
    p.add_argument("--curve-samples", type=int, default=300, help="samples per FD-curve point (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=300, help="samples of the final evaluation (default: %(default)s)")
    p.add_argument("--ode-steps", type=int, default=20, help="steps of the final evaluation (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="OMP threads per run (default: %(default)s)")
    p.add_argument("--factor", type=float, default=1.0, help="threshold = factor x worst final baseline FD (default: %(default)s)")
    p.add_argument("--levels", type=float, nargs="+", default=[30.0, 15.0, 10.0, 8.0],
                   help="FD levels of the steps-to-level table (default: 30 15 10 8)")
    p.add_argument("--analyse-only", action="store_true", help="only read the runs already in --out")
    args, extra = p.parse_known_args(argv)
    if args.factor <= 0:
        raise SystemExit(f"--factor must be positive, got {args.factor}")
    if BASELINE not in args.arms:
        raise SystemExit(f"--arms must include the baseline {BASELINE!r}")
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    if not args.analyse_only:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for future in [pool.submit(train_one, arm, seed, args, extra) for arm, seed in jobs]:
                future.result()
    curves: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for arm, seed in jobs:
        curves[arm].append(json.loads((run_dir(args.out, arm, seed) / "metrics.json").read_text())["curve"])
    summary = {"steps": args.steps, "seeds": args.seeds, "extra_flags": extra, **summarize(curves, args.factor),
               "levels": level_table(curves, args.levels)}
    (args.out / "steps_to_fd.json").write_text(json.dumps(summary, indent=2))
    print(f"threshold FD {summary['threshold_fd']:.3f} = {args.factor} x worst final FD of '{BASELINE}'")
    print(f"{'arm':8s} {'steps to FD':>18s} {'reached':>8s} {'final FD':>16s}")
    for arm, row in summary["arms"].items():
        print(f"{arm:8s} {row['steps_mean']:9.0f} +- {row['steps_std']:5.0f} {row['reached']:>4d}/{row['runs']:<3d} "
              f"{row['final_fd_mean']:8.3f} +- {row['final_fd_std']:.3f}")
    print("steps to reach each FD level (interpolated; mean +- std over the seeds that reach it, reached/seeds):")
    for row in summary["levels"]:
        cells = [f"{arm} {a['mean']:.0f} +- {a['std']:.0f} ({sum(r is not None for r in a['steps'])}/{len(a['steps'])})" for arm, a in row["arms"].items()]
        print(f"  FD {row['level']:g}: " + ", ".join(cells))
    return summary


if __name__ == "__main__":
    main()
