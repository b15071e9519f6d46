"""REPA: representation alignment (Yu et al. 2025, arXiv 2410.06938) for flow matching on a DiT.

Flow matching on the linear path (v-target, t ~ U[0, 1] as in the official code) plus the
alignment of the DiT's hidden tokens after block k with a frozen encoder's features of the clean image:

    z_t = (1 - t) x + t eps,   h = DiT_{1..k}(z_t, t, y)   (16 image tokens: patch 2 on 8x8)
    L = ||v_theta(z_t, t, y) - (eps - x)||^2 + lam * mean_tokens -cos(P(h), sg E(x))

P: a trained per-token projector (width -> hidden -> hidden -> 16, SiLU). E: the frozen digits
encoder (flowcore.representations), a 16 x 4 x 4 map whose cell i lines up with DiT token i.
--encoder none is plain FM on the same DiT (the baseline), --encoder random a random frozen encoder
(the control). Class-conditional with label dropout; sampled by 50-step Heun with CFG.
metrics.json holds an FD-vs-step curve (``curve``: EMA weights every --eval-every steps, a smaller
evaluation) from which steps-to-FD is read (scripts/repa_steps_to_fd.py compares the arms over seeds).

    python recipes/repa.py                    # REPA with the shipped encoder, runs/repa/
    python recipes/repa.py --encoder none     # the plain-FM baseline on the same DiT
"""

from __future__ import annotations

import argparse
import enum

import torch

from flowcore import experiment, guidance, losses, sampling, targets, train
from flowcore.interpolants import LinearPath, sample_path
from flowcore.representations import (
    FEATURE_CHANNELS, GRID, ProjectionHead, capture_block_output, feature_tokens, load_digits_encoder, random_digits_encoder,
    repa_alignment_loss,
)
from flowcore.times import Uniform, uniform_grid


class EncoderKind(enum.Enum):
    TRAINED = "trained"
    RANDOM = "random"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=1600, batch=128, lr=1e-3, depth=6, out="runs/repa")
    p.set_defaults(model=experiment.ModelKind.DIT, ema=0.99)  # EMA time constant ~100 steps: the FD curve must not lag
    p.add_argument("--encoder", type=EncoderKind, choices=list(EncoderKind), default=EncoderKind.TRAINED,
                   help="frozen encoder to align with; none = plain FM (default: %(default)s)")
    p.add_argument("--lam", type=float, default=0.5, help="weight of the alignment loss (default: %(default)s)")
    p.add_argument("--align-depth", type=int, default=None, help="align the output of this block, 1-based (default: round(depth / 3))")
    p.add_argument("--proj-hidden", type=int, default=256, help="projector hidden width (default: %(default)s)")
    p.add_argument("--label-drop", type=float, default=0.1, help="CFG label dropout (default: %(default)s)")
    p.add_argument("--cfg", type=float, default=1.5, help="sampling CFG scale (default: %(default)s)")
    p.add_argument("--ode-steps", type=int, default=50, help="Heun steps of the final evaluation (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=None, help="FD-curve period in steps (default: steps / 8)")
    p.add_argument("--curve-samples", type=int, default=300, help="samples per FD-curve point (default: %(default)s)")
    p.add_argument("--curve-ode-steps", type=int, default=20, help="Euler steps per FD-curve point (default: %(default)s)")
    args = experiment.finalize_args(p.parse_args(argv))
    if args.model is not experiment.ModelKind.DIT or args.data != experiment.DIGITS:
        raise SystemExit("REPA aligns DiT tokens with the digits encoder's 4x4 grid: use --model dit --data digits")
    args.align_depth = max(1, round(args.depth / 3)) if args.align_depth is None else args.align_depth
    if not 1 <= args.align_depth <= args.depth:
        raise SystemExit(f"--align-depth must be in [1, --depth={args.depth}], got {args.align_depth}")
    if args.lam < 0:
        raise SystemExit(f"--lam must be >= 0, got {args.lam}")
    if args.smoke:
        args.curve_samples, args.curve_ode_steps = 32, 2
    args.eval_every = max(1, args.steps // 8) if args.eval_every is None else args.eval_every
    if args.eval_every < 1:
        raise SystemExit(f"--eval-every must be >= 1, got {args.eval_every}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    run = experiment.setup(args)
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    if run.model.config.grid != GRID:
        raise SystemExit(f"the DiT has a {run.model.config.grid}x{run.model.config.grid} token grid; the encoder's is {GRID}x{GRID} (use patch 2)")
    encoder = {EncoderKind.TRAINED: load_digits_encoder, EncoderKind.RANDOM: lambda: random_digits_encoder(args.seed),
               EncoderKind.NONE: lambda: None}[args.encoder]()
    projector = None if encoder is None else ProjectionHead(args.width, args.proj_hidden, FEATURE_CHANNELS).to(dist.device)
    extra = {} if projector is None else {"projector": projector}
    params = list(run.model.parameters()) + [p for m in extra.values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=args.lr)
    path, t_dist, n_tokens = LinearPath(), Uniform(), GRID * GRID

    def generator(model: torch.nn.Module, n_ode: int, heun: bool) -> dict[str, experiment.Generator]:
        """CFG sampling from t = 1 to 0 on a uniform grid: Heun (final evaluation) or Euler (FD curve)."""
        name, solver = ("heun", sampling.heun) if heun else ("euler", sampling.euler)
        field = lambda y: sampling.velocity_of(guidance.guided(model, y, args.cfg, source.null_class))  # noqa: E731
        return {f"{name}{n_ode}": lambda eps, y: solver(field(y), eps, uniform_grid(n_ode))}

    def curve_point() -> dict[str, float]:
        """FD of the current EMA weights (deterministic: no global RNG is drawn, so --resume stays exact)."""
        model = ema.averaged(args.ema).eval()
        results, _ = experiment.evaluate(source, generator(model, args.curve_ode_steps, False), n=args.curve_samples, seed=args.seed)
        row = results[f"euler{args.curve_ode_steps}"]
        return {"curve_fd": row.get("fd", float("inf")), "curve_class_acc": row.get("class_acc", 0.0)}

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        logs = curve_point() if step > 0 and step % args.eval_every == 0 else {}
        x, y = source.batch(args.batch // dist.world_size)
        y, _ = guidance.drop_labels(y, args.label_drop, source.null_class)
        t = t_dist.sample(x.shape[0])
        z, v = sample_path(path, x, torch.randn_like(x), t)
        with capture_block_output(net, args.align_depth) as captured:
            out = net(z, t, t, y)
        loss_fm = losses.squared_error(out, targets.flow_matching_target(v), losses.Reduce.MEAN).mean()
        if encoder is None:
            return loss_fm, {**logs, "loss": loss_fm.item()}
        with torch.no_grad():
            features = feature_tokens(encoder(x))
        align = repa_alignment_loss(projector(captured["hidden"][:, -n_tokens:]), features)
        loss = loss_fm + args.lam * align
        return loss, {**logs, "loss": loss.item(), "fm": loss_fm.item(), "align": align.item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, f"repa[{args.encoder}]", extra_modules=extra)
    if not dist.is_main:
        train.close_distributed()
        return {}
    final_point = curve_point()
    curve = {"step": [], "fd": [], "class_acc": []}
    for step, (fd, acc) in enumerate(zip(history.get("curve_fd", []), history.get("curve_class_acc", []))):
        if fd == fd:  # not NaN: an evaluated step
            curve["step"].append(step), curve["fd"].append(fd), curve["class_acc"].append(acc)
    curve["step"].append(args.steps), curve["fd"].append(final_point["curve_fd"]), curve["class_acc"].append(final_point["curve_class_acc"])
    model = ema.averaged(args.ema).eval()
    results, samples = experiment.evaluate(source, generator(model, args.ode_steps, True), n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history, {
        "recipe": "repa", "train_seconds": train_seconds, "steps": args.steps, "encoder": args.encoder.value, "lam": args.lam,
        "align_depth": args.align_depth, "cfg": args.cfg,
        "curve": {**curve, "samples": args.curve_samples, "sampler": f"euler{args.curve_ode_steps} cfg {args.cfg}, EMA {args.ema}"}})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
