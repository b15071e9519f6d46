"""Fused JVP attention against torch's SDPA on CPU: times and memory measured side by side in one run.

    python bench/jvp_attention.py [--repeats 5] [--sizes 1024 2048 4096] [--json out.json]

Shape B=1, H=8, D=64, fp32, torch's intra-op thread count. Every time is the median of --repeats
runs after one warm-up round; the compared functions run round-robin so shared-machine load hits
them alike. Ratios printed against the issue's bars:
  - fused forward+tangent / default SDPA forward            (bar: <= 3.0 at N = 1024 and 4096)
  - SDPA(MATH) + torch.func.jvp / fused forward+tangent      (bar: >= 5 at N = 2048 and 4096)
  - extra memory of fused / of the math path at N = 4096     (bar: <= 1/20)
  - fused forward+backward through O and Odot / SDPA forward+backward  (bar: <= 3.5 at 1024, 4096)
The blockwise PyTorch fallback (used when the extension is not built) is timed for reference.
Memory is the peak resident set beyond inputs and outputs, each measured in a fresh subprocess.
On a shared machine the absolute times are noisy; the ratios of adjacent measurements less so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowcore.ops import _blockwise, attention_jvp, extension_available  # noqa: E402

B, H, D = 1, 8, 64


def inputs(n: int, count: int = 6, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return [torch.randn(B, H, n, D, generator=g).requires_grad_(requires_grad) for _ in range(count)]


def interleaved_median_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Median time of each function, the functions run round-robin (one warm-up round first) so that
    load from other processes on a shared machine hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ > 0:
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def sdpa_forward(q, k, v, *_):
    with torch.no_grad():
        return F.scaled_dot_product_attention(q, k, v)


def fused_forward_tangent(q, k, v, tq, tk, tv):
    with torch.no_grad():
        return attention_jvp(q, k, v, tq, tk, tv)


def blockwise_forward_tangent(q, k, v, tq, tk, tv):
    with torch.no_grad():
        return _blockwise.attn_fwd_jvp(q, k, v, tq, tk, tv, None, False, D**-0.5)[:2]


def math_forward_tangent(q, k, v, tq, tk, tv):
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(F.scaled_dot_product_attention, (q, k, v), (tq, tk, tv))


def fused_forward_backward(xs, weights):
    out, tout = attention_jvp(*xs)
    ((out * weights[0]).sum() + (tout * weights[1]).sum()).backward()


def sdpa_forward_backward(xs, weights):
    out = F.scaled_dot_product_attention(*xs[:3])
    (out * weights[0]).sum().backward()


FORWARD_TANGENT = {"fused": fused_forward_tangent, "math": math_forward_tangent}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(kind: str, n: int) -> None:
    """Prints the peak resident memory beyond inputs and outputs of one forward+tangent call."""
    xs = inputs(n)
    fn = FORWARD_TANGENT[kind]
    fn(*(x[..., :8, :] for x in xs))  # load libraries and kernels outside the measured window
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter (VmHWM)
    except OSError:
        pass
    before = rss_bytes()
    out = fn(*xs)
    output_bytes = sum(t.numel() * t.element_size() for t in out)
    print(json.dumps({"extra_bytes": max(peak_rss_bytes() - before - output_bytes, 0)}))


def extra_memory(kind: str, n: int) -> int:
    cmd = [sys.executable, __file__, "--memory-child", kind, str(n)]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["extra_bytes"]


def verdict(ok: bool) -> str:
    return "meets bar" if ok else "MISSES bar"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here")
    parser.add_argument("--memory-child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    if not extension_available():
        print("WARNING: flowcore._C is not built; 'fused' below is the blockwise PyTorch fallback")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={B} H={H} D={D} fp32, "
          f"median of {args.repeats}; shared machine: absolute times are noisy\n")
    res: dict[str, dict[int, float]] = {k: {} for k in ("sdpa_fwd", "fused_fwd_tangent", "blockwise_fwd_tangent", "math_fwd_tangent", "fused_fwd_bwd", "sdpa_fwd_bwd")}
    print(f"{'N':>6} {'SDPA fwd':>10} {'fused fwd+tan':>14} {'blockwise':>10} {'MATH+jvp':>10} {'fused/SDPA':>11} {'MATH/fused':>11}")
    for n in args.sizes:
        xs = inputs(n)
        fns = {"sdpa_fwd": sdpa_forward, "fused_fwd_tangent": fused_forward_tangent,
               "blockwise_fwd_tangent": blockwise_forward_tangent, "math_fwd_tangent": math_forward_tangent}
        medians = interleaved_median_ms({name: (lambda f=f: f(*xs)) for name, f in fns.items()}, args.repeats)
        for name, ms in medians.items():
            res[name][n] = ms
        print(f"{n:>6} {res['sdpa_fwd'][n]:>8.1f}ms {res['fused_fwd_tangent'][n]:>12.1f}ms "
              f"{res['blockwise_fwd_tangent'][n]:>8.1f}ms {res['math_fwd_tangent'][n]:>8.1f}ms "
              f"{res['fused_fwd_tangent'][n] / res['sdpa_fwd'][n]:>10.2f}x "
              f"{res['math_fwd_tangent'][n] / res['fused_fwd_tangent'][n]:>10.2f}x")
    print(f"\n{'N':>6} {'SDPA fwd+bwd':>13} {'fused fwd+bwd (O, Odot)':>24} {'ratio':>7}")
    for n in args.sizes:
        xs = inputs(n, requires_grad=True)
        weights = [torch.randn(B, H, n, D) for _ in range(2)]
        medians = interleaved_median_ms({"sdpa_fwd_bwd": lambda: sdpa_forward_backward(xs, weights),
                                         "fused_fwd_bwd": lambda: fused_forward_backward(xs, weights)}, args.repeats)
        for name, ms in medians.items():
            res[name][n] = ms
        print(f"{n:>6} {res['sdpa_fwd_bwd'][n]:>11.1f}ms {res['fused_fwd_bwd'][n]:>22.1f}ms "
              f"{res['fused_fwd_bwd'][n] / res['sdpa_fwd_bwd'][n]:>6.2f}x")
    n_mem = max(args.sizes)
    mem = {kind: extra_memory(kind, n_mem) for kind in ("fused", "math")}
    print(f"\nextra memory at N={n_mem} (forward+tangent, beyond inputs and outputs): fused {mem['fused'] / 2**20:.1f} MiB, "
          f"MATH+jvp {mem['math'] / 2**20:.1f} MiB, ratio {mem['fused'] / max(mem['math'], 1):.4f}")

    print("\nbars:")
    for n in (1024, 4096):
        if n in args.sizes:
            r = res["fused_fwd_tangent"][n] / res["sdpa_fwd"][n]
            print(f"  fused fwd+tangent / SDPA fwd at N={n}: {r:.2f}x (<= 3.0: {verdict(r <= 3.0)})")
    for n in (2048, 4096):
        if n in args.sizes:
            r = res["math_fwd_tangent"][n] / res["fused_fwd_tangent"][n]
            print(f"  SDPA(MATH)+jvp / fused at N={n}: {r:.2f}x faster (>= 5: {verdict(r >= 5.0)})")
    r = mem["fused"] / max(mem["math"], 1)
    print(f"  extra memory fused / MATH at N={n_mem}: {r:.4f} (<= 0.05: {verdict(r <= 0.05)})")
    for n in (1024, 4096):
        if n in args.sizes:
            r = res["fused_fwd_bwd"][n] / res["sdpa_fwd_bwd"][n]
            print(f"  fused fwd+bwd (O, Odot) / SDPA fwd+bwd at N={n}: {r:.2f}x (<= 3.5: {verdict(r <= 3.5)})")
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "times_ms": res, "extra_memory_bytes": mem,
                                         "memory_n": n_mem, "extension": extension_available()}, indent=2))


if __name__ == "__main__":
    main()
