"""JiT's toy experiment (Li & He 2025, arXiv 2511.13720): x-, eps- and v-prediction as the data
dimension grows past the network's width.

2D data x is embedded in D dimensions by a fixed random matrix P (D x 2) with orthonormal columns,
x_D = P x. The same MLP (residual width --width, so its output lies in a width-dimensional family of
directions per input) is trained on x_D with the v-loss of recipes/jit.py while it outputs x, eps or v
(``targets.velocity_from_prediction``), t ~ LogitNormal(0, 1); its EMA is sampled by 50 Heun steps.
Scores: the sliced W2 of the samples projected back, P^T x_D, against the 2D data (with the
data-vs-data floor), and the mean norm of the part of the sample off the data plane,
||(I - P P^T) x_D||, which is 0 for the data.

The paper's claim: x-prediction stays good as D grows, while eps- and v-prediction, whose targets
carry the D-dimensional noise, fail once D exceeds what the network can represent. Writes
OUT/results.json and OUT/table.md (one row per D, one column pair per prediction).

    python scripts/jit_embedding_dimension.py                      # D = 2, 32, 512 with width 128
    python scripts/jit_embedding_dimension.py --dims 2 1024 --width 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from flowcore import losses, metrics, sampling, targets, train
from flowcore.data import Toy2D
from flowcore.interpolants import LinearPath, sample_path
from flowcore.nn import MLP, MLPConfig
from flowcore.times import LogitNormal, uniform_grid

ROOT = Path(__file__).resolve().parents[1]


def orthonormal_embedding(dim: int, generator: torch.Generator) -> torch.Tensor:
    """P (dim x 2) with P^T P = I: the Q factor of a Gaussian matrix (JiT's random projection)."""
    if dim < 2:
        raise ValueError(f"the embedding dimension must be >= 2, got {dim}")
    q, _ = torch.linalg.qr(torch.randn(dim, 2, generator=generator, dtype=torch.float64))
    return q.float()


def off_plane_norm(x: torch.Tensor, embedding: torch.Tensor) -> float:
    """Mean over samples of ||(I - P P^T) x||: how far samples leave the data's plane."""
    return (x - (x @ embedding) @ embedding.T).norm(dim=1).mean().item()


def train_and_score(toy: Toy2D, embedding: torch.Tensor, prediction: targets.Prediction, args: argparse.Namespace) -> dict:
    """Train one MLP on P x with the JiT objective and score its Heun samples."""
    torch.manual_seed(args.seed)
    dim = embedding.shape[0]
    net = MLP(MLPConfig(dim=dim, width=args.width, depth=args.depth))
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    ema = train.EMA(net, (args.ema,))
    path, t_dist, data_gen = LinearPath(), LogitNormal(args.p_mean, args.p_std), torch.Generator().manual_seed(args.seed + 1)
    start = time.perf_counter()
    for _ in range(args.steps):
        x = toy.sample(args.batch, data_gen) @ embedding.T
        t = t_dist.sample(args.batch)
        z, _ = sample_path(path, x, torch.randn_like(x), t)
        v_target = targets.velocity_from_x_prediction(z, x, t, args.t_floor)
        v_pred = targets.velocity_from_prediction(prediction, z, net(z, t, t), t, args.t_floor)
        loss = losses.squared_error(v_pred, v_target, losses.Reduce.MEAN).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(net)
    train_seconds = time.perf_counter() - start
    average = ema.averaged(args.ema)
    field = lambda z, t: targets.velocity_from_prediction(prediction, z, average(z, t, t), t, args.t_floor)
    with torch.no_grad():
        noise = torch.randn(args.eval_samples, dim, generator=torch.Generator().manual_seed(args.seed + 2))
        samples = sampling.heun(field, noise, uniform_grid(args.ode_steps))
    if not torch.isfinite(samples).all():
        return {"finite": False, "train_seconds": train_seconds}
    sw2 = metrics.metric_with_floor(metrics.sliced_w2, samples @ embedding, toy.sample, seed=args.seed)
    return {"sw2": sw2.value, "sw2_floor": sw2.floor, "off_plane": off_plane_norm(samples, embedding),
            "final_loss": loss.item(), "train_seconds": round(train_seconds, 1)}


def markdown(results: dict[int, dict[str, dict]], predictions: list[targets.Prediction]) -> str:
    header = ["D"] + [f"{p} SW2 / floor" for p in predictions] + [f"{p} off-plane" for p in predictions]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dim, row in results.items():
        ratio = [f"{row[str(p)]['sw2'] / row[str(p)]['sw2_floor']:.2f}" if row[str(p)].get("finite", True) else "diverged" for p in predictions]
        off = [f"{row[str(p)]['off_plane']:.3f}" if row[str(p)].get("finite", True) else "-" for p in predictions]
        lines.append("| " + " | ".join([str(dim), *ratio, *off]) + " |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Toy2D, choices=list(Toy2D), default=Toy2D.SPIRALS, help="2D data (default: %(default)s)")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 32, 512], help="embedding dimensions D (default: 2 32 512)")
    p.add_argument("--predictions", type=targets.Prediction, nargs="+", choices=list(targets.Prediction), default=list(targets.Prediction))
    p.add_argument("--width", type=int, default=128, help="MLP residual width (default: %(default)s)")
    p.add_argument("--depth", type=int, default=4, help="MLP residual blocks (default: %(default)s)")
    p.add_argument("--steps", type=int, default=4000, help="training steps per run (default: %(default)s)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the sampled weights (default: %(default)s)")
    p.add_argument("--t-floor", type=float, default=0.05, help="JiT's t_eps (default: %(default)s)")
    p.add_argument("--p-mean", type=float, default=0.0, help="logit-normal mean of t (default: %(default)s; recipes/jit.py's image setting is 0.8)")
    p.add_argument("--p-std", type=float, default=1.0, help="logit-normal std of t (default: %(default)s; recipes/jit.py: 0.8)")
    p.add_argument("--ode-steps", type=int, default=50, help="Heun steps (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "jit_embedding_dimension")
    args = p.parse_args(argv)
    for name in ("width", "depth", "steps", "batch", "ode_steps", "eval_samples"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.dims) < 2:
        raise SystemExit(f"--dims must all be >= 2, got {args.dims}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    results: dict[int, dict[str, dict]] = {}
    for dim in args.dims:
        embedding = orthonormal_embedding(dim, torch.Generator().manual_seed(args.seed + dim))
        results[dim] = {}
        for prediction in args.predictions:
            results[dim][str(prediction)] = train_and_score(args.data, embedding, prediction, args)
            print(f"D={dim} {prediction}: {results[dim][str(prediction)]}", flush=True)
    table = markdown(results, args.predictions)
    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, (Path, Toy2D)) else v) for k, v in vars(args).items()}
    config["predictions"] = [str(p) for p in args.predictions]
    (args.out / "results.json").write_text(json.dumps({"config": config, "results": results}, indent=2))
    (args.out / "table.md").write_text(table)
    print(table, flush=True)
    return results


if __name__ == "__main__":
    main()
