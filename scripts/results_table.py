"""Write the README's results section from the runs' metrics.json and the benchmarks' JSON output.

    bash scripts/reproduce.sh          # runs the defaults and the benchmarks, then this script
    python scripts/results_table.py    # only regenerate the README section from existing outputs

No number in the section is typed by hand: each comes from a file named beside it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNS = {
    "fm (digits)": ROOT / "runs/fm/metrics.json",
    "fm (checkerboard)": ROOT / "runs/fm_checkerboard/metrics.json",
    "meanflow (checkerboard)": ROOT / "runs/meanflow/metrics.json",
    "pmf (digits)": ROOT / "runs/pmf/metrics.json",
    **{f"{r} (default)": ROOT / f"runs/{r}/metrics.json" for r in (
        "rectified_flow", "imf", "alphaflow", "uaimf", "dmf", "tvm", "jit", "cm", "scm", "freeflow", "metaflow")},
}
BENCHES = {
    "step_cost": ROOT / "bench/out/step_cost.json",
    "fm_vs_peers": ROOT / "bench/out/fm_vs_peers.json",
    "jvp_attention": ROOT / "bench/out/jvp_attention.json",
    "recipe_step_cost": ROOT / "bench/out/recipe_step_cost.json",
}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def run_table(runs: dict[str, dict]) -> list[str]:
    lines = ["| run | sampler | metric | value | data floor | class acc. | train time |", "|---|---|---|---|---|---|---|"]
    for label, m in runs.items():
        res = m["results"]
        key = "fd" if "fd" in res["floor"] else "sw2"
        for name, row in res.items():
            if name == "floor" or key not in row:
                continue
            acc = f"{100 * row['class_acc']:.1f}%" if "class_acc" in row else "-"
            minutes = f"{m['train_seconds'] / 60:.1f} min" if "train_seconds" in m else "-"
            lines.append(f"| {label} | {name} | {'FD' if key == 'fd' else 'sliced W2'} | {_fmt(row[key])} | {_fmt(res['floor'][key])} | {acc} | {minutes} |")
    return lines


def best(res: dict, names: list[str], key: str) -> float:
    return min(res[n][key] for n in names if n in res and key in res[n])


def bar_lines(runs: dict[str, dict], benches: dict[str, dict]) -> list[str]:
    out = ["| bar | measured | target | met |", "|---|---|---|---|"]

    def row(text: str, value: float, target: str, ok: bool) -> None:
        out.append(f"| {text} | {_fmt(value)} | {target} | {'yes' if ok else '**no**'} |")

    fm2d, mf = runs.get("fm (checkerboard)"), runs.get("meanflow (checkerboard)")
    if fm2d and mf:
        teacher = best(fm2d["results"], ["euler100", "heun100"], "sw2")
        one = mf["results"]["1nfe"]["sw2"]
        row("MeanFlow 1-NFE SW2 / FM 100-step SW2 (checkerboard)", one / teacher, "<= 1.5", one / teacher <= 1.5)
        floor = mf["results"]["floor"]["sw2"]
        row("MeanFlow 1-NFE SW2 / data floor (checkerboard)", one / floor, "<= 2", one / floor <= 2)
    fm, pmf = runs.get("fm (digits)"), runs.get("pmf (digits)")
    if fm and pmf:
        teacher = best(fm["results"], ["euler50", "heun50"], "fd")
        one = pmf["results"]["1nfe"]
        row("pMF 1-NFE FD / FM 50-step FD (digits)", one["fd"] / teacher, "<= 1.5", one["fd"] / teacher <= 1.5)
        row("pMF 1-NFE class accuracy", one["class_acc"], ">= 0.90", one["class_acc"] >= 0.90)
    for label, m in runs.items():
        res = m["results"]
        if fm and label.endswith("(default)") and "fd" in res.get("1nfe", {}):
            teacher = best(fm["results"], ["euler50", "heun50"], "fd")
            one = res["1nfe"]
            row(f"{label.split()[0]} 1-NFE FD / FM 50-step FD (digits)", one["fd"] / teacher, "<= 1.5", one["fd"] / teacher <= 1.5)
            row(f"{label.split()[0]} 1-NFE class accuracy", one["class_acc"], ">= 0.90", one["class_acc"] >= 0.90)
            if "2nfe" in res:
                row(f"{label.split()[0]} 2-NFE FD / 1-NFE FD", res["2nfe"]["fd"] / one["fd"], "<= 1", res["2nfe"]["fd"] <= one["fd"])
    if benches.get("step_cost"):
        for r in benches["step_cost"]["rows"]:
            ratios = {k[6:]: v for k, v in r.items() if k.startswith("ratio_")}
            best_name = min(ratios, key=ratios.get)
            for name, v in ratios.items():
                if name == best_name:
                    row(f"MeanFlow step / FM step, {r['model']}, best back end ({name})", v, "<= 1.7", v <= 1.7)
                else:
                    out.append(f"| MeanFlow step / FM step, {r['model']}, {name} | {_fmt(v)} | reported | - |")
        for r in benches["step_cost"]["rows"]:
            if "ratio_fused" in r and "256" in r["model"]:
                v = r["ratio_fused"] / r["ratio_jvp"]
                row(f"MeanFlow step with fused / with math JVP, {r['model']}", v, "< 1", v < 1)
    att = benches.get("jvp_attention")
    if att:
        t, mem = att["times_ms"], att["extra_memory_bytes"]
        for n in ("1024", "4096"):
            if n in t["sdpa_fwd"]:
                v = t["fused_fwd_tangent"][n] / t["sdpa_fwd"][n]
                row(f"fused fwd+tangent / SDPA fwd, N={n}", v, "<= 3.0", v <= 3.0)
        for n in ("2048", "4096"):
            if n in t["sdpa_fwd"]:
                v = t["math_fwd_tangent"][n] / t["fused_fwd_tangent"][n]
                row(f"speed-up over SDPA(MATH)+jvp, N={n}", v, ">= 5", v >= 5)
        v = mem["fused"] / max(mem["math"], 1)
        row(f"extra memory fused / MATH, N={att['memory_n']}", v, "<= 0.05", v <= 0.05)
        for n in ("1024", "4096"):
            if n in t["sdpa_fwd_bwd"]:
                v = t["fused_fwd_bwd"][n] / t["sdpa_fwd_bwd"][n]
                row(f"fused fwd+bwd (O, O') / SDPA fwd+bwd, N={n}", v, "<= 3.5", v <= 3.5)
    if benches.get("fm_vs_peers"):
        for name, v in benches["fm_vs_peers"]["ratios"].items():
            row(f"flowcore FM step / {name} FM step", v, "<= 1.05", v <= 1.05)
    return out


def section() -> str:
    runs = {k: m for k, p in RUNS.items() if (m := _load(p)) is not None}
    benches = {k: m for k, p in BENCHES.items() if (m := _load(p)) is not None}
    parts = ["Sources: " + ", ".join(f"`{p.relative_to(ROOT)}`" for p in list(RUNS.values()) + list(BENCHES.values()) if p.is_file()), ""]
    parts += ["### Bars", ""] + bar_lines(runs, benches) + ["", "### Runs (EMA weights; FD in the shipped classifier's features)", ""] + run_table(runs)
    for recipe, key, label in (("pmf", "fd", "FD"), ("meanflow", "sw2", "sliced W2")):
        budget = _load(ROOT / f"runs/{recipe}_budget/quality_vs_time.json")
        if not budget:
            continue
        parts += ["", f"### {recipe} quality vs training time (`scripts/quality_vs_time.py {recipe}`: one run continued by --resume; "
                  "budget minutes = steps at the default run's measured rate on 2 threads)", "",
                  f"| budget minutes | steps | 1-NFE {label} | 2-NFE {label} | 4-NFE {label} | data floor |", "|---|---|---|---|---|---|"]
        for r in budget["rows"]:
            res = r["results"]
            parts.append(f"| {r['minutes_budget']:g} | {r['steps']} | {_fmt(res['1nfe'][key])} | {_fmt(res['2nfe'][key])} | "
                         f"{_fmt(res['4nfe'][key])} | {_fmt(res['floor'][key])} |")
    if benches.get("step_cost"):
        b = benches["step_cost"]
        parts += ["", f"Step cost: batch {b['batch']}, median of {b['repeats']}, {b['threads']} threads (`bench/step_cost.py`)."]
    if rsc := benches.get("recipe_step_cost"):
        parts += ["", f"Each recipe's own training step against an FM step, same model and batch {rsc['batch']}, {rsc['threads']} threads "
                  "(`bench/recipe_step_cost.py`: slope of train_seconds between a 10- and a 60-step run; train_seconds is rounded to 0.1 s, "
                  "so each time has a 2 ms resolution):", "",
                  "| model | recipe | derivative | ms / step | x FM step |", "|---|---|---|---|---|"]
        for r in rsc["rows"]:
            parts.append(f"| {r['model']} | {r['recipe']} | {r['derivative']} | {r['ms_per_step']:.1f} | {r['ratio_to_fm']:.2f} |")
    if att := benches.get("jvp_attention"):
        parts += ["", f"Attention: B=1, H=8, D=64, fp32, {att['threads']} threads, median times in ms (`bench/jvp_attention.py`):", "",
                  "| N | " + " | ".join(att["times_ms"]) + " |", "|---|" + "---|" * len(att["times_ms"])]
        for n in att["times_ms"]["sdpa_fwd"]:
            parts.append(f"| {n} | " + " | ".join(f"{att['times_ms'][k].get(n, float('nan')):.1f}" for k in att["times_ms"]) + " |")
    return "\n".join(parts)


def main() -> None:
    text = README.read_text()
    new, n = re.subn(r"(<!-- results:start -->\n).*?(\n<!-- results:end -->)", lambda m: m.group(1) + section() + m.group(2), text, flags=re.S)
    if n != 1:
        sys.exit("README.md has no results markers")
    README.write_text(new)
    print(section())


if __name__ == "__main__":
    main()
