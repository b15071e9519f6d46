"""How much of a digits FD is the noise draw: each run's EMA weights scored on several independent noise draws.

A recipe scores its samples once, from one draw of noise (seed + 777) against half A of the digits, so its
FD carries that draw's sampling error as well as the model's. This script regenerates the same number of
samples from ``--draws`` independent draws (draw 0 is the recipe's own, so its FD equals the recipe's
``metrics.json``) and reports per generator the FD of every draw, their mean and standard deviation.

    FD_mean = (1/K) sum_k FD(G(eps_k, y), half A),   eps_k ~ N(0, I) independent, k = 0..K-1

The generators and the network are the recipe's own: a recipe that defines ``generators(student, args, source)``
(fm, pmf, imf, tvm) and ``model_options(args)`` (pmf, imf, tvm, dmf) is sampled and built through them, any other
(meanflow, alphaflow, uaimf, dmf, freeflow) through ``experiment.flow_map_generators``, as those recipes evaluate;
``args`` is the recipe's defaults overridden by the run's config.json. The weights are the run's EMA weights
from its safetensors checkpoint.

    python scripts/fd_draws.py runs/fm runs/uaimf runs/pmf --json runs/fd_draws.json

--set FLAG=VALUE re-scores a run with one of its recipe's sampling flags changed (recipes with their own generators),
for example iMF's guidance interval at omega = 1; the run is stored as NAME[FLAG=VALUE,...]:

    python scripts/fd_draws.py runs/imf --set t_min=0.4 --set t_max=0.65
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from flowcore import experiment, metrics, train
from flowcore.experiment import DIGITS, ModelKind

COVERED = ("fm", "meanflow", "alphaflow", "uaimf", "dmf", "pmf", "imf", "tvm", "freeflow")
FLAGS_BEFORE_THEY_EXISTED = {"aux_head_depth": 0, "drop_on_equal": False}
"""The value each later-added flag stood for in runs whose config.json predates it (no aux blocks, any row dropped):
such a run is rebuilt with these, not with a recipe default that has since changed (imf's aux_head_depth is now 4)."""


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """["t_min=0.4", ...] -> {"t_min": "0.4", ...}."""
    bad = [pair for pair in pairs if "=" not in pair]
    if bad:
        raise SystemExit(f"--set takes FLAG=VALUE, got {bad}")
    return dict(pair.split("=", 1) for pair in pairs)


def with_overrides(args: argparse.Namespace, name: str, overrides: dict[str, str]) -> argparse.Namespace:
    """``args`` with each overridden flag converted to the type of its current value (a number); other flags are refused."""
    unknown = sorted(k for k in overrides if not hasattr(args, k))
    if unknown:
        raise SystemExit(f"--set: recipe {name!r} has no flag {unknown}")
    not_numbers = sorted(k for k in overrides if type(getattr(args, k)) not in (int, float))
    if not_numbers:
        raise SystemExit(f"--set takes numeric flags only, not {not_numbers}")
    return argparse.Namespace(**{**vars(args), **{k: type(getattr(args, k))(v) for k, v in overrides.items()}})


def load_run(run: Path, overrides: dict[str, str] | None = None) -> tuple[dict[str, experiment.Generator], dict]:
    """(the recipe's generators on the run's EMA network, the run's config) of a finished digits run; ``overrides``
    changes the recipe's sampling flags (only for recipes with their own generators)."""
    for name in ("config.json", "metrics.json", train.CHECKPOINT_NAME):
        if not (run / name).is_file():
            raise SystemExit(f"{run} has no {name}: not a finished run")
    config, name = json.loads((run / "config.json").read_text()), json.loads((run / "metrics.json").read_text())["recipe"]
    if config.get("data") != DIGITS:
        raise SystemExit(f"{run} was trained on {config.get('data')!r}: this script scores digits runs")
    if name not in COVERED:
        raise SystemExit(f"{run}: recipe {name!r} is not covered ({', '.join(COVERED)})")
    recipe = experiment.load_recipe(name)
    args = argparse.Namespace(**{**vars(recipe.parse([])), **FLAGS_BEFORE_THEY_EXISTED, **config})
    if overrides:
        if not hasattr(recipe, "generators"):
            raise SystemExit(f"--set: recipe {name!r} samples through experiment.flow_map_generators, which has no flags")
        args = with_overrides(args, name, overrides)
    source = experiment.load_source(DIGITS)
    options = recipe.model_options(args) if hasattr(recipe, "model_options") else {}
    net = experiment.build_model(ModelKind(config["model"]), source, width=config["width"], depth=config["depth"],
                                 fourier_features=config.get("fourier_features", 0), fourier_scale=config.get("fourier_scale", 1.0), **options)
    train.load_weights(run / train.CHECKPOINT_NAME, {train.ema_name(config["ema"]): net})
    net.eval().requires_grad_(False)
    if hasattr(recipe, "generators"):
        return recipe.generators(net, args, source), config
    return experiment.flow_map_generators(net), config


@torch.no_grad()
def fd_draws(generators: dict[str, experiment.Generator], draws: int, seed: int, n: int | None) -> dict[str, list[float]]:
    """FD of each generator on ``draws`` noise draws; draw 0 is ``experiment.evaluate``'s (seed + 777)."""
    judge = metrics.DigitsJudge.load()
    ref, labels, other = experiment.digits_eval_sets(n)
    out: dict[str, list[float]] = {name: [] for name in generators}
    for k in range(draws):
        noise = torch.randn(other.shape, generator=torch.Generator().manual_seed(seed + 777 + 1000 * k))
        for name, generate in generators.items():
            out[name].append(judge.fd(generate(noise, labels).float().clamp(-1, 1), ref))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--draws", type=int, default=5, help="independent noise draws per generator (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="write (and merge into) this JSON")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FLAG=VALUE",
                   help="re-score with a sampling flag of the recipe changed, e.g. t_min=0.4 (repeatable)")
    args = p.parse_args()
    overrides = parse_overrides(args.overrides)
    suffix = "[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]" if overrides else ""
    if args.draws < 2:
        raise SystemExit(f"--draws must be >= 2 for a spread, got {args.draws}")
    report = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    if report and report.get("draws") != args.draws:
        raise SystemExit(f"{args.json} holds {report.get('draws')} draws per run, not {args.draws}")
    report["draws"] = args.draws
    for run in args.runs:
        generators, config = load_run(run, overrides)
        fds = fd_draws(generators, args.draws, config["seed"], config.get("eval_samples"))
        report.setdefault("runs", {})[run.name + suffix] = {"recipe": json.loads((run / "metrics.json").read_text())["recipe"], "generators": {
            name: {"fd": v, "mean": statistics.mean(v), "sd": statistics.stdev(v)} for name, v in fds.items()}}
        for name, v in fds.items():
            print(f"{run.name + suffix:36s} {name:8s} " + " ".join(f"{x:.3f}" for x in v) + f"  mean {statistics.mean(v):.3f} sd {statistics.stdev(v):.3f}", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
