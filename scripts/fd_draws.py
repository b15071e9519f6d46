"""How much of a digits FD is the noise draw: each run's EMA weights scored on several independent noise draws.

A recipe scores its samples once, from one draw of noise (seed + 777) against half A of the digits, so its
FD carries that draw's sampling error as well as the model's. This script regenerates the same number of
samples from ``--draws`` independent draws (draw 0 is the recipe's own, so its FD equals the recipe's
``metrics.json``) and reports per generator the FD of every draw, their mean and standard deviation.

    FD_mean = (1/K) sum_k FD(G(eps_k, y), half A),   eps_k ~ N(0, I) independent, k = 0..K-1

It covers the FM teacher (Euler and Heun, 50 steps, CFG as the run's) and the flow-map students sampled
with flowcore's k-step flow map: meanflow (digits), alphaflow, uaimf, dmf (velocity u), pmf (x-prediction,
u = (z - x)/clip(t)), imf (u-head with guidance inputs), tvm (the scaled parameterisation w G) and freeflow
(its 1-step map). The
weights are read from each run's checkpoint (safetensors) and its config.json.

    python scripts/fd_draws.py runs/fm runs/uaimf runs/pmf --json runs/fd_draws.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from flowcore import experiment, guidance, metrics, sampling, targets, train
from flowcore.experiment import DIGITS, ModelKind
from flowcore.nn import TimeInputs
from flowcore.nn.dit import Conditioning
from flowcore.times import uniform_grid

NFES = (1, 2, 4)
COVERED = ("fm", "meanflow", "alphaflow", "uaimf", "dmf", "pmf", "imf", "tvm", "freeflow")
Generator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def model_options(recipe: str, config: dict) -> dict:
    """The network options the recipe passes to ``experiment.setup`` beyond its flags."""
    return {
        "pmf": {"n_scalar_conds": 1, "aux_head": True},
        "imf": {"n_scalar_conds": 3, "aux_head": True, "time_inputs": TimeInputs(config.get("time_inputs", TimeInputs.T_GAP.value)),
                "conditioning": Conditioning.IN_CONTEXT},
        "tvm": {"n_scalar_conds": 1},
        "dmf": {"decoupled_blocks": config.get("decoupled_blocks") or 0},
    }.get(recipe, {})


def flow_map_of(recipe: str, net: torch.nn.Module, config: dict) -> Callable[[torch.Tensor], sampling.FlowMap]:
    """y -> the recipe's flow map (z, t, s) -> z_s, as its own evaluation samples it."""
    def ones(y: torch.Tensor, value: float) -> torch.Tensor:
        return torch.full((y.shape[0],), float(value))

    if recipe == "pmf":
        return lambda y: (lambda z, t, s: targets.velocity_from_x_prediction(
            z, net(z, t, s, y, guidance.guidance_feature(ones(y, config["omega"]))[:, None])[0], t, config["t_floor"]))
    if recipe == "imf":
        def imf(y: torch.Tensor) -> sampling.FlowMap:
            c = torch.stack([guidance.guidance_feature(ones(y, config["omega"])), ones(y, config["t_min"]), ones(y, config["t_max"])], dim=1)
            return lambda z, t, s: net(z, t, s, y, c)[0]
        return imf
    if recipe == "tvm":
        def tvm(y: torch.Tensor) -> sampling.FlowMap:
            w = ones(y, config["cfg"])
            c = guidance.guidance_feature(w)[:, None]
            return lambda z, t, s: w.view(-1, *([1] * (z.dim() - 1))) * net(z, t, s, y, c)
        return tvm
    return lambda y: (lambda z, t, s: net(z, t, s, y))


def generators_of(recipe: str, net: torch.nn.Module, config: dict, source: experiment.Source) -> dict[str, Generator]:
    """The run's generators by the names its metrics.json uses."""
    if recipe == "fm":
        w = config.get("cfg", 1.5)
        field = lambda y: sampling.velocity_of(guidance.guided(net, y, w, source.null_class))  # noqa: E731
        n = config.get("ode_steps") or 50
        return {f"euler{n}": lambda eps, y: sampling.euler(field(y), eps, uniform_grid(n)),
                f"heun{n}": lambda eps, y: sampling.heun(field(y), eps, uniform_grid(n))}
    flow_map = flow_map_of(recipe, net, config)
    nfes = (1,) if recipe == "freeflow" else NFES
    return {f"{k}nfe": (lambda eps, y, k=k: sampling.flow_map_sample(flow_map(y), eps, uniform_grid(k))) for k in nfes}


def load_run(run: Path) -> tuple[str, dict, torch.nn.Module, experiment.Source]:
    """(recipe, config, EMA network in eval mode, data source) of a finished digits run."""
    for name in ("config.json", "metrics.json", train.CHECKPOINT_NAME):
        if not (run / name).is_file():
            raise SystemExit(f"{run} has no {name}: not a finished run")
    config, recipe = json.loads((run / "config.json").read_text()), json.loads((run / "metrics.json").read_text())["recipe"]
    if config.get("data") != DIGITS:
        raise SystemExit(f"{run} was trained on {config.get('data')!r}: this script scores digits runs")
    if recipe not in COVERED:
        raise SystemExit(f"{run}: recipe {recipe!r} is not covered ({', '.join(COVERED)})")
    source = experiment.load_source(DIGITS)
    net = experiment.build_model(ModelKind(config["model"]), source, width=config["width"], depth=config["depth"],
                                 fourier_features=config.get("fourier_features", 0), fourier_scale=config.get("fourier_scale", 1.0),
                                 **model_options(recipe, config))
    train.load_weights(run / train.CHECKPOINT_NAME, {train.ema_name(config["ema"]): net})
    return recipe, config, net.eval().requires_grad_(False), source


@torch.no_grad()
def fd_draws(generators: dict[str, Generator], draws: int, seed: int, n: int | None) -> dict[str, list[float]]:
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
    args = p.parse_args()
    if args.draws < 2:
        raise SystemExit(f"--draws must be >= 2 for a spread, got {args.draws}")
    report = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    if report and report.get("draws") != args.draws:
        raise SystemExit(f"{args.json} holds {report.get('draws')} draws per run, not {args.draws}")
    report["draws"] = args.draws
    for run in args.runs:
        recipe, config, net, source = load_run(run)
        fds = fd_draws(generators_of(recipe, net, config, source), args.draws, config["seed"], config.get("eval_samples"))
        report.setdefault("runs", {})[run.name] = {"recipe": recipe, "generators": {
            name: {"fd": v, "mean": statistics.mean(v), "sd": statistics.stdev(v)} for name, v in fds.items()}}
        for name, v in fds.items():
            print(f"{run.name:36s} {name:8s} " + " ".join(f"{x:.3f}" for x in v) + f"  mean {statistics.mean(v):.3f} sd {statistics.stdev(v):.3f}", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
