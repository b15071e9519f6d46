"""MeanFlow with the training scheme of "Understanding, Accelerating, and Improving MeanFlow Training"
(Kim et al. 2025, arXiv 2511.19065): the MeanFlow objective of recipes/meanflow.py, with

- accelerated velocity learning on the s = t rows, either a curriculum on their times (--acceleration
  dtd, the paper's main choice: equal-mass bins of the logit-normal opened from t = 1, noise, towards
  t = 0 over the first 30% of the run, a fixed-pace DTD) or a Min-SNR-5 weight alpha(t) =
  min((1 - t)^2, 5 t^2) (--acceleration min_snr, Min-SNR's x-space weight moved onto the velocity
  loss, normalised to mean 1 over those rows' times);
- progressive gap weighting on the s < t rows, beta(dt, s) = 1 - s + lam s (1 - dt), dt = t - s_target,
  s = 1 - step/steps the training still ahead, lam = 1 / E[1 - dt] (small gaps first, all gaps equal
  at the end). The paper's time runs as MeanFlow's (t = 1 noise) like flowcore's, and beta depends
  on the gap only, so nothing converts.

    L = mean_i  w_i sum_d (u - u_tgt)^2 / sg(sum_d (u - u_tgt)^2 + c),   u_tgt = sg(v_g - (t - s) du/dt)
    w_i = alpha(t) on s = t rows (1 without Min-SNR), beta(dt, s) on s < t rows

With --acceleration none --no-gap-weight this is recipes/meanflow.py step for step.

Defaults differ from the paper's ImageNet run where digits measured otherwise: p = 0.5 rather than 1, the
learning rate falling to 0 over the last 30 %, and no training-time CFG (omega 1, kappa 0). 1-NFE FD after
7000 steps (the FM teacher's 50-step FD: 0.78; README, uaimf rows):

    DTD, p = 1, training-time CFG (omega 1.5, kappa 0.5), seed 0      2.47     (the paper's settings)
    DTD, p = 1, no CFG, seed 0                                        1.33
    DTD, p = 0.5, lr decay, no CFG (default), seeds 0 / 1 / 2         1.22 / 1.39 / 1.21
    Min-SNR, p = 0.5, lr decay, no CFG, seeds 0 / 1 / 2               1.04 / 1.74 / 1.38
    DTD without the gap weight (--no-gap-weight), seed 0              1.12     (mean of 5 draws 1.24, the default's 1.27)
    DTD, p = 0, gradient norm clipped at 1.5 (--grad-clip 1.5), seed 0  3.39
    DTD, half the rows at s = t (--equal-fraction 0.5), seeds 0 / 1     1.24 / 1.27  (means of 5 draws 1.37 / 1.28)
    DTD, labels dropped on s = t rows only (--drop-on-equal, the official MeanFlow code's batches), seeds 0 / 1 / 2
                                                                      1.06 / 1.42 / 1.40  (means of 5 draws 1.17 / 1.48 / 1.57)

One seed's 1-NFE FD can be 1.7x another's (Min-SNR, seeds 0 and 1), so the choice rests on the means: DTD,
the paper's, stays the default (1.27 vs 1.39). As means of 5 noise draws (scripts/fd_draws.py) the default's seeds
give 1.27 / 1.40 / 1.32, the FM teacher 0.99. Wall clock on 2 threads: 9.6 min projected by
bench/default_wall_time.py (81.5 ms per step), 11.9 min measured for a whole run in an earlier session (README
row uaimf_2threads, 101 ms per step): the machine's speed varied that much between the two sessions.

    python recipes/uaimf.py --p 1 --lr-decay 0 --omega 1.5 --kappa 0.5 --out runs/uaimf_paper   # the paper's settings
    python recipes/uaimf.py                                  # digits
    python recipes/uaimf.py --data checkerboard --steps 12000 --batch 256
    python recipes/meanflow.py --data digits --steps 7000 --batch 128 --p 0.5 --lr-decay 0.3 --omega 1 --kappa 0   # comparison
"""

from __future__ import annotations

import argparse
import enum

import torch

from flowcore import experiment, guidance, losses, targets, train
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, sample_path
from flowcore.times import EasyToHardCurriculum, LogitNormal, sample_pairs


class Acceleration(enum.Enum):
    NONE = "none"
    MIN_SNR = "min_snr"
    DTD = "dtd"

    def __str__(self) -> str:
        return self.value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=7000, batch=128, lr=1e-3, depth=4, out="runs/uaimf")
    p.add_argument("--derivative", type=Derivative, choices=list(Derivative), default=Derivative.JVP, help="du/dt back end (default: %(default)s)")
    p.add_argument("--acceleration", type=Acceleration, choices=list(Acceleration), default=Acceleration.DTD, help="velocity-row acceleration (default: %(default)s)")
    p.add_argument("--gap-weight", action=argparse.BooleanOptionalAction, default=True, help="progressive gap weighting of the s < t rows (default: on)")
    p.add_argument("--min-snr-gamma", type=float, default=5.0, help="Min-SNR gamma (default: %(default)s)")
    p.add_argument("--dtd-bins", type=int, default=5, help="curriculum bins (default: %(default)s)")
    p.add_argument("--dtd-fraction", type=float, default=0.3, help="fraction of the run that opens every bin (default: %(default)s)")
    p.add_argument("--curriculum-steps", type=int, default=None, help="length the curriculum and gap weighting are laid on (default: --steps; keep it when a resumed run extends --steps)")
    p.add_argument("--equal-fraction", type=float, default=0.75, help="fraction of rows with s = t (default: %(default)s)")
    experiment.add_meanflow_loss_args(p)
    p.set_defaults(p=0.5, lr_decay=0.3, omega=1.0, kappa=0.0)  # measured on digits: see the module docstring
    args = experiment.finalize_args(p.parse_args(argv))
    args.curriculum_steps = args.steps if args.curriculum_steps is None else args.curriculum_steps
    if args.curriculum_steps < 1:
        raise SystemExit(f"--curriculum-steps must be >= 1, got {args.curriculum_steps}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    run = experiment.setup(args)
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr)
    path, t_dist, derivative = LinearPath(), LogitNormal(-0.4, 1.0), DirectionalDerivative(args.derivative)
    curriculum = EasyToHardCurriculum(t_dist, args.dtd_bins, args.dtd_fraction)
    # Normalisers from a fixed draw of the pair sampler (its own generator: the training RNG stays untouched).
    t0, s0 = sample_pairs(1 << 16, t_dist, generator=torch.Generator().manual_seed(0))
    lam = losses.gap_weight_normalizer(t0 - s0)
    snr_scale = 1.0 / losses.min_snr_velocity_weight(t0, args.min_snr_gamma).mean().item()

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        progress = min(1.0, step / args.curriculum_steps)
        x, y = source.batch(args.batch // dist.world_size)
        t, s = sample_pairs(x.shape[0], t_dist, equal_fraction=args.equal_fraction)
        equal = t == s
        if args.acceleration is Acceleration.DTD:
            t_easy = curriculum.sample(x.shape[0], progress)
            t, s = torch.where(equal, t_easy, t), torch.where(equal, t_easy, s)
        z, v = sample_path(path, x, torch.randn_like(x), t)
        if y is not None:
            y, dropped = guidance.drop_labels(y, args.label_drop, source.null_class, among=equal if args.drop_on_equal else None)
            v = guidance.meanflow_training_velocity(net, z, t, v, y, dropped, source.null_class, args.omega, args.kappa)
        u, du_dt = derivative(lambda z_, t_: net(z_, t_, s, y), (z, t), (v, torch.ones_like(t)))
        u_tgt = targets.meanflow_target(v, t, s, du_dt).detach()
        per_sample = losses.squared_error(u, u_tgt, losses.Reduce.SUM)
        v_weight = snr_scale * losses.min_snr_velocity_weight(t, args.min_snr_gamma) if args.acceleration is Acceleration.MIN_SNR else torch.ones_like(t)
        u_weight = losses.progressive_gap_weight(t - s, 1.0 - progress, lam) if args.gap_weight else torch.ones_like(t)
        loss = (torch.where(equal, v_weight, u_weight) * losses.adaptively_weighted(per_sample, args.p, args.c)).mean()
        return loss, {"loss": loss.item(), "mse": per_sample.mean().item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "uaimf")
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()
    results, samples = experiment.evaluate(source, experiment.flow_map_generators(student), n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "uaimf", "train_seconds": train_seconds, "steps": args.steps, "derivative": args.derivative.value,
                              "acceleration": args.acceleration.value, "gap_weight": args.gap_weight})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
