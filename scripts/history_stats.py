"""What a run's training history says about its stability: a key of the loss history (``grad_norm``,
recorded when --grad-clip is on, or a recipe's ``mse``) summarised over windows of steps, read from the
run's safetensors checkpoint (its JSON metadata; nothing is unpickled).

    per window [a, b):  median, 99th percentile, max, and the fraction of steps above --above

With ``--key grad_norm --above C`` the fraction is how often a clip at C acted (the norm is recorded before
clipping); with ``--key mse`` the max against the median shows a loss spike.

    python scripts/history_stats.py runs/alphaflow_seed1_clip10 --key grad_norm --above 10
    python scripts/history_stats.py runs/alphaflow runs/alphaflow_seed1 --key mse --windows 0 1000 2500 3500 4900 6000 7000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from flowcore import train


def window_stats(values: list[float], edges: list[int], above: float) -> list[dict[str, float]]:
    """Per window [edges[i], edges[i + 1]) of ``values``: median, 99th percentile, max and the fraction > ``above``."""
    if len(edges) < 2 or sorted(set(edges)) != edges or edges[0] < 0 or edges[-1] > len(values):
        raise ValueError(f"window edges must increase strictly within [0, {len(values)}], got {edges}")
    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        x = torch.tensor(values[a:b], dtype=torch.float64)
        rows.append({"start": a, "end": b, "median": x.median().item(), "p99": x.quantile(0.99).item(), "max": x.max().item(),
                     "fraction_above": (x > above).double().mean().item()})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--key", default="grad_norm", help="history key (default: %(default)s)")
    p.add_argument("--above", type=float, default=float("inf"), help="threshold of the fraction column (default: none)")
    p.add_argument("--windows", type=int, nargs="+", default=None, help="window edges in steps (default: the whole run)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    out = {}
    for run in args.runs:
        history = train.checkpoint_info(run / train.CHECKPOINT_NAME).history
        if args.key not in history:
            raise SystemExit(f"{run}: the history has no {args.key!r} (it has {sorted(history)}); grad_norm needs --grad-clip")
        values = history[args.key]
        out[str(run)] = window_stats(values, args.windows or [0, len(values)], args.above)
        print(f"{run} {args.key}: window median p99 max fraction>{args.above:g}")
        for r in out[str(run)]:
            print(f"  [{r['start']}, {r['end']}) {r['median']:.3g} {r['p99']:.3g} {r['max']:.3g} {r['fraction_above']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"key": args.key, "above": args.above, "runs": out}, indent=2))


if __name__ == "__main__":
    main()
