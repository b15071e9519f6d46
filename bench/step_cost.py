"""Cost of one MeanFlow training step relative to one flow-matching step, same model and batch.

Each step is forward + backward + Adam. MeanFlow's step takes du/dt with each derivative back end:
exact JVP (torch.func.jvp, the primal output reused for the loss), forward finite difference (one
extra no-grad forward), and the fused JVP-attention kernel (DiT only, when the extension is built).
Steps are interleaved round-robin and the median of each is reported, so the ratios are measured
side by side in one run.

    python bench/step_cost.py                 # DiT 8x8/patch 2 and the MLP at batch 128; DiT at 256 tokens
    python bench/step_cost.py --repeats 30 --json bench/out/step_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from flowcore import losses, targets
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, sample_path
from flowcore.nn import DiT, DiTConfig, MLP, MLPConfig
from flowcore.times import LogitNormal, sample_pairs


def fm_step(model, opt, x, y):
    t = LogitNormal(0.0, 1.0).sample(x.shape[0])
    z, v = sample_path(LinearPath(), x, torch.randn_like(x), t)
    loss = losses.squared_error(model(z, t, t, y), v, losses.Reduce.MEAN).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def meanflow_step(model, opt, x, y, derivative: DirectionalDerivative):
    t, s = sample_pairs(x.shape[0], LogitNormal(-0.4, 1.0), equal_fraction=0.75)
    z, v = sample_path(LinearPath(), x, torch.randn_like(x), t)
    u, du_dt = derivative(lambda z_, t_: model(z_, t_, s, y), (z, t), (v, torch.ones_like(t)))
    per = losses.squared_error(u, targets.meanflow_target(v, t, s, du_dt).detach(), losses.Reduce.SUM)
    loss = losses.adaptively_weighted(per, 1.0, 1e-2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def measure(name_to_step: dict, repeats: int, warmup: int = 3) -> dict[str, float]:
    for step in name_to_step.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in name_to_step}
    for _ in range(repeats):
        for name, step in name_to_step.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_model(label: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int, fused: bool) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    steps = {"fm": lambda: fm_step(model, opt, x, y)}
    methods = [Derivative.JVP, Derivative.FD] + ([Derivative.FUSED] if fused else [])
    for method in methods:
        op = DirectionalDerivative(method)
        steps[f"meanflow_{method.value}"] = lambda op=op: meanflow_step(model, opt, x, y, op)
    med = measure(steps, repeats)
    row = {"model": label, "fm_ms": 1e3 * med["fm"]}
    for method in methods:
        row[f"meanflow_{method.value}_ms"] = 1e3 * med[f"meanflow_{method.value}"]
        row[f"ratio_{method.value}"] = med[f"meanflow_{method.value}"] / med["fm"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batch-256", type=int, default=16, help="batch of the 256-token DiT row")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 8, 8)
    y = torch.randint(0, 10, (args.batch,))
    try:
        from flowcore.ops import extension_available
        fused = extension_available()
    except ImportError:
        fused = False
    x256 = torch.randn(args.batch_256, 1, 32, 32)
    rows = [
        bench_model("DiT 8x8 p2 w128 d4", DiT(DiTConfig(width=128, depth=4, heads=4, num_classes=10)), x, y, args.repeats, fused),
        bench_model("MLP w512 d4", MLP(MLPConfig(dim=64, width=512, depth=4, num_classes=10)), x, y, args.repeats, False),
        bench_model(f"DiT 256 tokens (32x32 p2) w128 d4, batch {args.batch_256}",
                    DiT(DiTConfig(image_size=32, width=128, depth=4, heads=4, num_classes=10)), x256, y[: args.batch_256], args.repeats, fused),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, median of {args.repeats}")
    for row in rows:
        parts = [f"{row['model']}: FM step {row['fm_ms']:.1f} ms"]
        parts += [f"MeanFlow/{k[6:]} {v:.2f}x" for k, v in row.items() if k.startswith("ratio_")]
        if "ratio_fused" in row:
            parts.append(f"fused step / jvp step {row['ratio_fused'] / row['ratio_jvp']:.2f}x")
        print("  " + ", ".join(parts))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"batch": args.batch, "repeats": args.repeats, "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
