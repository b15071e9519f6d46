"""What torch.compile buys a MeanFlow JVP step on the recipes' MLPs (--compile): forward-mode AD pays a
fixed cost per op, which dominates a small MLP. --data checkerboard: the 2D recipe's width-256 MLP on 64
Fourier features at batch 256; --data digits: the digits recipes' class-conditional width-512 MLP at batch 128.

Steps (forward + backward + Adam) of the same model and batch, interleaved round-robin, median of each:
FM (eager), MeanFlow with an eager JVP, MeanFlow with the JVP and loss compiled (compiled once before
timing; the compile time is reported apart). Ratios are measured side by side in one run.

    python bench/compiled_step.py --json bench/out/compiled_step.json
    python bench/compiled_step.py --data digits --json bench/out/compiled_step_digits.json
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

from flowcore import experiment, losses, targets  # noqa: E402
from flowcore.derivatives import Derivative, DirectionalDerivative  # noqa: E402
from flowcore.interpolants import LinearPath, sample_path  # noqa: E402
from flowcore.times import Uniform, sample_pairs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=[experiment.DIGITS, "checkerboard"], default="checkerboard")
    p.add_argument("--batch", type=int, default=None, help="default: 256 on checkerboard, 128 on digits")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", type=Path, default=None, help="also write the row here")
    args = p.parse_args()
    digits = args.data == experiment.DIGITS
    args.batch = (128 if digits else 256) if args.batch is None else args.batch
    if args.batch < 1 or args.repeats < 1:
        raise SystemExit(f"--batch and --repeats must be >= 1, got {args.batch} and {args.repeats}")
    torch.manual_seed(0)
    source = experiment.load_source(args.data)
    model = experiment.build_model(experiment.ModelKind.MLP, source, width=512 if digits else 256, depth=4, fourier_features=0 if digits else 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = source.batch(args.batch)
    jvp = DirectionalDerivative(Derivative.JVP)

    def regression(z, t, s, v):
        u, du_dt = jvp(lambda z_, t_: model(z_, t_, s, y), (z, t), (v, torch.ones_like(t)))
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
    med = measure({"fm": lambda: fm_step(model, opt, x, y), "eager": lambda: meanflow_step(regression),
                   "compiled": lambda: meanflow_step(compiled)}, args.repeats)
    name = "MLP digits w512 d4, class-conditional" if digits else "MLP 2D w256 d4, 64 Fourier features"
    row = {"model": name, "batch": args.batch, "repeats": args.repeats, "threads": torch.get_num_threads(),
           "fm_ms": 1e3 * med["fm"], "eager_jvp_ms": 1e3 * med["eager"], "compiled_jvp_ms": 1e3 * med["compiled"],
           "compiled_over_eager": med["compiled"] / med["eager"], "eager_over_fm": med["eager"] / med["fm"],
           "compiled_over_fm": med["compiled"] / med["fm"], "compile_seconds": compile_seconds}
    print(f"{name}, torch {torch.__version__}, {row['threads']} threads, batch {args.batch}, median of {args.repeats}: FM step {row['fm_ms']:.1f} ms, "
          f"MeanFlow eager JVP {row['eager_jvp_ms']:.1f} ms ({row['eager_over_fm']:.2f}x FM), compiled {row['compiled_jvp_ms']:.1f} ms "
          f"({row['compiled_over_fm']:.2f}x FM, {row['compiled_over_eager']:.2f}x eager); compiling took {compile_seconds:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
