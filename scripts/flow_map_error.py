"""Where a 2D flow map's jumps go wrong: the k-NFE map of a run against the FM teacher's ODE map.

Under one interpolant every flow map of the marginal flow equals the ODE map, so for the same noise
eps the MeanFlow jump x_k = Phi_k(eps) should equal x_ode = (200 Euler steps of the FM teacher)(eps).
The script reports the mean ||x_k - x_ode|| over bands of ||eps|| (how far into the Gaussian's tail
the starting point lies): a map that is wrong only in the tails piles the tail mass up somewhere.
The teacher is itself an approximation, so the 4-NFE row says how far the reference is trustworthy.

    python scripts/flow_map_error.py runs/meanflow runs/meanflow_seed1 --json runs/flow_map_error.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from flowcore import experiment, sampling, targets, times, train

BANDS = ((0.0, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 2.5), (2.5, float("inf")))
"""Bands of ||eps|| for a 2D standard normal (mass about 39 / 29 / 18 / 9 / 4 %)."""


def load_run(run: Path, source: experiment.Source) -> torch.nn.Module:
    """A run's evaluated (EMA) network, rebuilt from its config.json."""
    dist = train.Dist(rank=0, world_size=1, device=torch.device("cpu"))
    return experiment.load_teacher(run / train.CHECKPOINT_NAME, source, dist)


def average_velocity(run: Path, model: torch.nn.Module) -> sampling.FlowMap:
    """u(z, t, s) of a run's network under the run's --prediction (v, the output itself, when the config has none)."""
    config = json.loads((run / "config.json").read_text())
    u = targets.velocity_network(model, targets.Prediction(config.get("prediction", "v")), config.get("t_floor", 0.05))
    return lambda z, t, s: u(z, t, s, None)


def banded_error(x: torch.Tensor, reference: torch.Tensor, radius: torch.Tensor) -> list[float]:
    """mean ||x - reference|| over the rows whose radius falls in each band of BANDS."""
    error = (x - reference).norm(dim=1)
    return [error[(radius >= lo) & (radius < hi)].mean().item() for lo, hi in BANDS]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="flow-map runs on one 2D toy (their checkpoint and config.json)")
    p.add_argument("--teacher", type=Path, default=None, help="FM run (default: the recipes' default teacher for the runs' data)")
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.samples < 1 or any(k < 1 for k in args.nfe):
        raise SystemExit(f"--samples and every --nfe must be >= 1, got {args.samples} and {args.nfe}")
    for run in args.runs:
        missing = [name for name in ("config.json", train.CHECKPOINT_NAME) if not (run / name).is_file()]
        if missing:
            raise SystemExit(f"{run} is not a finished run: it lacks {', '.join(missing)}")
    data = {json.loads((run / "config.json").read_text())["data"] for run in args.runs}
    if len(data) != 1 or experiment.DIGITS in data:
        raise SystemExit(f"the runs must share one 2D toy, got {sorted(data)}")
    source = experiment.load_source(data.pop())
    teacher = load_run(args.teacher or experiment.default_teacher_dir(source.name), source)
    torch.manual_seed(args.seed)
    eps = torch.randn(args.samples, 2)
    radius = eps.norm(dim=1)
    out = {"bands": [[lo, hi] for lo, hi in BANDS], "samples": args.samples, "runs": {}}
    with torch.no_grad():
        x_ode = sampling.euler(sampling.velocity_of(lambda z, t, s: teacher(z, t, s, None)), eps, times.uniform_grid(200))
        print("mean ||x_k - x_ode|| by ||eps|| band " + " ".join(f"[{lo:g},{hi:g})" for lo, hi in BANDS))
        for run in args.runs:
            u = average_velocity(run, load_run(run, source))
            rows = {}
            for k in args.nfe:
                x_k = sampling.flow_map_sample(u, eps, times.uniform_grid(k))
                rows[f"{k}nfe"] = banded_error(x_k, x_ode, radius)
                print(f"{run} {k}-NFE: " + " ".join(f"{e:.3f}" for e in rows[f"{k}nfe"]))
            out["runs"][str(run)] = rows
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
