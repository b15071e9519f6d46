"""How a recipe's quality moves with training time: one run continued with --resume through
increasing step budgets (the resume is exact, so each stage is the prefix of one longer run), each
stage evaluated by the recipe itself. Step budgets come from the default run's measured rate.

A recipe whose default learning rate decays at the end of the run (--lr-decay > 0 in the reference
run's config.json) has no such prefix: its schedule depends on --steps. Each budget is then its own
run from scratch (budget k in <out>/<minutes>min), and train minutes are that run's alone.

    python scripts/quality_vs_time.py pmf --minutes 2 5 10 20
    -> runs/pmf_budget/quality_vs_time.json (read by scripts/results_table.py)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe")
    p.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10, 20])
    p.add_argument("--reference", type=Path, default=None, help="default run whose rate sets the budgets (default: runs/<recipe>)")
    args = p.parse_args()
    reference_dir = args.reference or ROOT / "runs" / args.recipe
    reference = json.loads((reference_dir / "metrics.json").read_text())
    resumed = json.loads((reference_dir / "config.json").read_text()).get("lr_decay", 0) == 0
    steps_per_minute = 60 * reference["steps"] / reference["train_seconds"]
    out = ROOT / "runs" / f"{args.recipe}_budget"
    shutil.rmtree(out, ignore_errors=True)
    rows, elapsed = [], 0.0
    for i, minutes in enumerate(sorted(args.minutes)):
        steps = max(1, round(steps_per_minute * minutes))
        stage = out if resumed else out / f"{minutes:g}min"
        cmd = [sys.executable, str(ROOT / "recipes" / f"{args.recipe}.py"), "--out", str(stage), "--steps", str(steps)] + (["--resume"] if resumed and i else [])
        subprocess.run(cmd, check=True)
        metrics = json.loads((stage / "metrics.json").read_text())
        elapsed = elapsed + metrics["train_seconds"] if resumed else metrics["train_seconds"]
        rows.append({"minutes_budget": minutes, "steps": steps, "train_minutes": round(elapsed / 60, 2), "results": metrics["results"]})
        (out / "quality_vs_time.json").write_text(json.dumps({"recipe": args.recipe, "steps_per_minute": steps_per_minute, "resumed": resumed, "rows": rows}, indent=2))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
