"""What torch.compile buys a MeanFlow JVP step on the small MLP of the 2D recipe (recipes/meanflow.py
--compile): forward-mode AD pays a fixed cost per op, which dominates a width-256 MLP at batch 256.

Steps (forward + backward + Adam) of the same model and batch, interleaved round-robin, median of each:
FM (eager), MeanFlow with an eager JVP, MeanFlow with the JVP and loss compiled (compiled once before
timing; the compile time is reported apart). Ratios are measured side by side in one run.

    python bench/compiled_step.py --json bench/out/compiled_step.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_cost import fm_step, measure  # noqa: E402

from flowcore import losses, targets  # noqa: E402
from flowcore.derivatives import Derivative, DirectionalDerivative  # noqa: E402
from flowcore.interpolants import LinearPath, sample_path  # noqa: E402
from flowcore.nn import MLP, MLPConfig  # noqa: E402
from flowcore.times import Uniform, sample_pairs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", type=Path, default=None, help="also write the row here")
    args = p.parse_args()
    torch.manual_seed(0)
    model = MLP(MLPConfig(dim=2, width=256, depth=4, fourier_features=64, fourier_scale=1.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 2)
    jvp = DirectionalDerivative(Derivative.JVP)

    def regression(z, t, s, v):
        u, du_dt = jvp(lambda z_, t_: model(z_, t_, s), (z, t), (v, torch.ones_like(t)))
        return losses.squared_error(u, targets.meanflow_target(v, t, s, du_dt).detach(), losses.Reduce.SUM).mean()

    compiled = torch.compile(regression)

    def meanflow_step(loss_of) -> None:
        t, s = sample_pairs(x.shape[0], Uniform(), equal_fraction=0.75)
        z, v = sample_path(LinearPath(), x, torch.randn_like(x), t)
        loss = loss_of(z, t, s, v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    meanflow_step(compiled)
    compile_seconds = time.perf_counter() - start
    med = measure({"fm": lambda: fm_step(model, opt, x, None), "eager": lambda: meanflow_step(regression),
                   "compiled": lambda: meanflow_step(compiled)}, args.repeats)
    row = {"model": "MLP 2D w256 d4, 64 Fourier features", "batch": args.batch, "repeats": args.repeats, "threads": torch.get_num_threads(),
           "fm_ms": 1e3 * med["fm"], "eager_jvp_ms": 1e3 * med["eager"], "compiled_jvp_ms": 1e3 * med["compiled"],
           "compiled_over_eager": med["compiled"] / med["eager"], "eager_over_fm": med["eager"] / med["fm"],
           "compiled_over_fm": med["compiled"] / med["fm"], "compile_seconds": compile_seconds}
    print(f"torch {torch.__version__}, {row['threads']} threads, batch {args.batch}, median of {args.repeats}: FM step {row['fm_ms']:.1f} ms, "
          f"MeanFlow eager JVP {row['eager_jvp_ms']:.1f} ms ({row['eager_over_fm']:.2f}x FM), compiled {row['compiled_jvp_ms']:.1f} ms "
          f"({row['compiled_over_fm']:.2f}x FM, {row['compiled_over_eager']:.2f}x eager); compiling took {compile_seconds:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
