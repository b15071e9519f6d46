"""flowcore's flow-matching training step against the same step written with torchcfm and with
facebookresearch's flow_matching, on the same model, batch and optimizer (uniform t, linear path,
mean squared error). Steps are interleaved round-robin; medians and ratios come from one run.

The peers are benchmark-only, never dependencies; install them without letting them pull a torch:
    pip install --no-deps torchcfm flow_matching pot
    python bench/fm_vs_peers.py --json bench/out/fm_vs_peers.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from flowcore import losses, targets
from flowcore.interpolants import LinearPath, sample_path
from flowcore.nn import DiT, DiTConfig, MLP, MLPConfig
from flowcore.times import Uniform


def flowcore_loss(model, x, y):
    t = Uniform().sample(x.shape[0])
    z, v = sample_path(LinearPath(), x, torch.randn_like(x), t)
    return losses.squared_error(model(z, t, t, y), targets.flow_matching_target(v), losses.Reduce.MEAN).mean()


def torchcfm_loss(matcher, model, x, y):
    t, xt, ut = matcher.sample_location_and_conditional_flow(torch.randn_like(x), x)
    return torch.mean((model(xt, t, t, y) - ut) ** 2)


def flow_matching_loss(path, model, x, y):
    t = torch.rand(x.shape[0])
    sample = path.sample(x_0=torch.randn_like(x), x_1=x, t=t)
    return torch.mean((model(sample.x_t, t, t, y) - sample.dx_t) ** 2)


def timed_step(loss_fn, opt) -> float:
    start = time.perf_counter()
    loss = loss_fn()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def bench(label, model, x, y, repeats):
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    matcher, path = ConditionalFlowMatcher(sigma=0.0), AffineProbPath(scheduler=CondOTScheduler())
    fns = {
        "flowcore": lambda: flowcore_loss(model, x, y),
        "torchcfm": lambda: torchcfm_loss(matcher, model, x, y),
        "flow_matching": lambda: flow_matching_loss(path, model, x, y),
    }
    for fn in fns.values():
        for _ in range(3):
            timed_step(fn, opt)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed_step(fn, opt))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": label, **{f"{k}_ms": 1e3 * v for k, v in med.items()},
            **{f"flowcore/{k}": med["flowcore"] / med[k] for k in ("torchcfm", "flow_matching")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 1, 8, 8), torch.randint(0, 10, (args.batch,))
    rows = [bench("DiT 8x8 p2 w128 d4", DiT(DiTConfig(num_classes=10)), x, y, args.repeats),
            bench("MLP w512 d4", MLP(MLPConfig(dim=64, num_classes=10)), x, y, args.repeats)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, median of {args.repeats}")
    for r in rows:
        print(f"  {r['model']}: flowcore {r['flowcore_ms']:.1f} ms, torchcfm {r['torchcfm_ms']:.1f} ms, flow_matching {r['flow_matching_ms']:.1f} ms;"
              f" ratio flowcore/torchcfm {r['flowcore/torchcfm']:.3f}, flowcore/flow_matching {r['flowcore/flow_matching']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        ratios = {f"{k} ({r['model']})": r[f"flowcore/{k}"] for r in rows for k in ("torchcfm", "flow_matching")}
        args.json.write_text(json.dumps({"batch": args.batch, "repeats": args.repeats, "rows": rows, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
