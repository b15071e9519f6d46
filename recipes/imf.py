"""improved MeanFlow (Geng et al. 2025, arXiv 2512.02012, iMF): MeanFlow recast as a velocity loss,
with guidance as a model input. Two heads: u (average velocity) and v (instantaneous, used only in
training), the v-head with its own copies of the blocks (--aux-head-depth). Following the official code:

    omega ~ log-uniform[1, omega_max], [t_min, t_max] ~ U[0, 0.5] x U[0.5, 1] ([0, 1] on the s = t rows)
    w = omega inside [t_min, t_max], else 1;  c = (1 - 1/omega, t_min, t_max) is a network input
    v_c, v_u = v-head at (z, t, h = 0) with (y, w) and (null, 1), interval input [0, 1]   (no grad)
    v_g = v_t + (1 - 1/w)(v_c - v_u),  v_t = eps - x;  10% label dropout: y = null, v_g = v_t
    (u, v), du/dt = JVP of (z, t) -> (u, v)(z, t, s, y, c) along (v_c, 1), s fixed (--derivative)
    L = w(L_u) L_u + w(L_v) L_v,  L_u = ||u + (t - s) sg(du/dt) - sg v_g||^2,  L_v = ||v - sg v_g||^2
    w(L) = 1 / sg(L + 0.01)^p (sum over dims);  t, s ~ logit-normal(-0.4, 1) sorted, s = t on half the rows

omega_max defaults to 4 on digits (the official 1 + 7 is an ImageNet value); label-dropped rows keep
their omega input, as in the official code. Two defaults differ from the paper, as in recipes/pmf.py
and measured on digits (README, imf rows): p = 0, the plain squared error, instead of the adaptive
weight's p = 1 (1-NFE FD 1.59; 3.01 with p = 1, though that run also had --lr-decay 0.3; both 7000 steps;
2.23 with p = 0.5 and --lr-decay 0.3 at 5000 steps), and sampling at omega = 1. --p 1 --omega 1.5 restores the
paper's choices. As in iMF, the v-head runs its own copies of the blocks (all --depth = 4 here, --aux-head-depth; iMF's
MiT-B/2: 8 of 12) and sampling gives the network an interval inside the training range ([0.4, 0.65], iMF's released config),
both measured below. With them the MLP's width is 384 rather than 512, for the 10-minute budget: 5000 steps (cut from
7000) at 104.5 ms per step on 2 threads, 8.8 min projected, where width 512 takes 139 ms and 11.7 min and v0 (below)
80 ms (bench/default_wall_time.py, README table "Flag variants' wall clock", one invocation); the default run itself
trained in 536 s on 2 threads.

Before that the default was v0 = --aux-head-depth 0 --width 512 --t-min 0 --t-max 1 (one trunk, each head only its own
output layer, sampled with the interval [0, 1]); every comparison below up to the sampling interval was run against v0,
with v0's flags (scripts/reproduce.sh). The imf_* runs at 7000 steps sit beside imf_7k.

Sampling: z_s = z_t + (s - t) u(z_t, t, s, y, c) at 1, 2, 4 NFE with c = (1 - 1/--omega, --t-min, --t-max):
guidance costs no extra evaluation. iMF conditions its DiT by in-context tokens: --model dit uses
them (one token per time input, class and scalar condition). The default is the residual MLP
(adaLN): on CPU the DiT takes several times longer per step and stays far behind in 10 minutes.
recipes/pmf.py is the same objective with x-prediction heads: --prediction x reads u = (z - x_u)/clip(t, --t-floor)
and regresses onto (z - x)/clip(t) as pMF (--no-clipped-target: onto eps - x, as the runs marked * below). pmf.py,
with its own time sampler and learning-rate decay, measured x better than v (1.18 vs 1.40 with the JVP). Comparisons
at 5000 steps, v0's flags and then these, against v0's 1.60 (1.68 on seed 1), none meeting the bar (<= 1.16):
    --prediction x (*)                                                             2.88
    no training-time guidance (--omega-max 1, so v_g = v_t)                        1.89
    Adam's beta2 at 0.999 (--beta2)                                                3.19
    --omega-max 1 --lr-decay 0.3 (MeanFlow's best settings on digits), p = 0 / 0.5   1.94 / 2.43
    pMF's times (--t-mean 0 --t-std 0.8 --uniform-fraction 0.1 --equal-before-sort) with --lr-decay 0.3,
    v heads / x heads (*) / x heads                                                2.08 / 1.88 / 1.87
    no sampled guidance interval (--no-interval: [0, 1] on every row)              1.69
    pMF's times, lr decay, x heads and --no-interval, (*) / clipped target         1.48 / 1.20
    the last two with the clipped target on seed 1, with / without the interval    2.49 / 1.52
So x heads need pMF's time sampler here (2.88 -> 1.88), and with iMF's sampled guidance interval they stay at 1.87
whichever target. Without the interval, and with pMF's clipped target, imf reaches pmf.py's 1.18 (1.20; on seed 1
1.52 against 2.49 with the interval): the interval is what separates imf's x heads from pmf.py. imf keeps it, since
the sampled interval is part of iMF.

What separates imf (v0) from MeanFlow, at 5000 steps:
    du/dt along MeanFlow's v_g instead of the v-head's v_c (--tangent target)       1.65
    the v-head's loss weighted 0.1 (--v-weight 0.1), seeds 0 / 1                   1.87 / 2.14
    no training-time guidance and Adam's beta2 at 0.999, tangent v_c / v_g         2.73 / 3.01
against recipes/meanflow.py with the same data, steps, batch, p = 0, s = t fraction and no guidance (one head, no
scalar inputs, v_g as the tangent, beta2 0.999): 1.17. Walking imf towards it, all without guidance, with v_g as the
tangent and beta2 0.999: 3.01; with no sampled interval (--no-interval) 2.39; with the v-head's loss off as well
(--v-weight 0, the head then unused) 1.39. So on digits the v-head's loss costs imf most, and the sampled interval next;
iMF's tangent does not. With guidance the v-head also builds the guided target, and weighting its loss down hurts (above).

The v-head's own blocks (--aux-head-depth k: the v-head runs its own copies of the last k of the --depth blocks after the
ones it shares with the u-head). 1-NFE FD sampled with v0's interval [0, 1], single draw / mean of 5 draws:
    the walk's run above (no guidance, no interval, v_g, beta2 0.999): shared 2.39 / 2.55, v-head's loss off 1.39 / 1.52,
    all 4 blocks the v-head's own 1.35 / 1.42
    v0's settings, k = 0 / 2 / 3 / 4                                1.60 / 1.66, 1.58 / 1.66, 1.88 / 1.97, 1.48 / 1.60
    seed 1, k = 0 / 4                                               1.68 / 1.53, 1.53 / 1.43
    k = 4 at width 384                                              1.54 / 1.68
Without guidance, then, what the v-head's loss cost imf was the trunk it shared with the u-head; with guidance, a v-head of
its own gains about 0.1 on seeds 0 and 1 (the teacher's mean: 0.99).

The sampling interval. At omega = 1 the interval does not change the target, but it is a network input, and in training the
s < t rows draw it from U[0, 0.5] x U[0.5, 1] while [0, 1] comes only with the s = t rows: a jump sampled with [0, 1], as v0
did, shows the network an input it met only at s = t. iMF's code samples inside the training range. The same weights re-scored
at [0.4, 0.65] (scripts/fd_draws.py --set t_min=0.4 --set t_max=0.65), means of 5 draws, [0, 1] -> [0.4, 0.65]:
    k = 4, seeds 0 / 1                    1.60 -> 1.39, 1.43 -> 1.35      k = 4 at width 384   1.68 -> 1.47
    k = 2 / 3                             1.66 -> 1.49, 1.97 -> 1.86      k = 0, seeds 0 / 1   1.66 -> 1.60, 1.53 -> 1.75
    the walk's run with k = 4, trained without the interval ([0, 1] on every row, so in range): 1.42 -> 2.02
So the interval helps every run with the v-head's own blocks, and the shared trunk on one seed of two. k = 4 at width 512
for 3600 steps (what fits 10 minutes) fell to 1.59 / 1.66. The default, k = 4 at width 384 sampled at
[0.4, 0.65], on seeds 0 / 1 / 2 / 3 / 4 / 5: 1.38 / 1.47, 1.35 / 1.33, 1.44 / 1.57, 1.25 / 1.31, 1.42 / 1.54, 1.43 / 1.46
(single draw / mean of 5; v0 on seeds 0 / 1 / 2: 1.60 / 1.66, 1.68 / 1.53, 1.85 / 2.06). Over the FM teacher's Heun-50 FD
that is 1.48x / 1.34x / 1.58x / 1.32x / 1.56x / 1.48x as means of 5 draws, the bar's reading (1.5x; README, "How to read a
digits FD"), 1.46x over the 6 seeds: the default sits at the bar, within it on 4 seeds of 6. On the recipes' single draw,
where the teacher sits at 0.78, by the data's own floor (0.77), it is 1.60x to 1.84x.
More changes to the default, seeds 0 / 1, single draw / mean of 5 (the default's: 1.38 / 1.47, 1.35 / 1.33):
    the learning rate decayed over the last 30 % (--lr-decay 0.3, MeanFlow's and uaimf's)   1.41 / 1.48, 1.51 / 1.46
    Adam's beta2 at 0.9 (--beta2 0.9)                                                     1.26 / 1.37, 1.43 / 1.41
    evaluated on the EMA of decay 0.9995 / 0.998 (--ema; the default 0.999)               1.66 / 1.58, 1.49 / 1.43 and
                                                                                          1.52 / 1.63, 1.54 / 1.53
none better on both seeds (beta2 0.9 also lifts seed 0's 2-NFE mean from 0.85 to 0.92; 0.9995, which after 5000 steps still
holds 8 % of the initial weights, drops class accuracy to 90-92 %), so none is the default. Nor is
guidance at sampling: re-scored at --omega 1.25 / 1.5 (scripts/fd_draws.py --set omega=...), the default's means of 5 on seeds
0 / 1 / 2 / 3 rise from 1.47 / 1.33 / 1.57 / 1.31 to 1.64 / 1.47 / 1.63 / 1.43 and 1.79 / 1.64 / 1.72 / 1.58.

Label dropout: the official code drops the labels of the first N ~ Binomial(B, 0.1) rows of a batch, and its first rows are
its s = t rows, so no s < t row is ever unconditional (MeanFlow's official code does the same). Here each row is dropped with
probability 0.1, so a tenth of the s < t rows regress an unconditional average velocity. --drop-on-equal drops as the official
code does; with v0's flags it made imf worse on both seeds, 1-NFE FD 1.60 / 1.68 -> 2.30 / 2.17 on seeds 0 / 1 (means of 5
draws 1.66 / 1.53 -> 2.38 / 2.14); recipes/uaimf.py gains from it on one seed of three. The training guidance range with v0's
flags, --omega-max 2 / 4 (the default) / 8 (the official 1 + 7): 1.95 / 1.60 / 2.07 (means of 5 draws 2.11 / 1.66 / 2.14).

    python recipes/imf.py                                    # digits, MLP
    python recipes/imf.py --model dit --derivative fused     # in-context DiT, fused JVP attention
"""

from __future__ import annotations

import argparse
import enum

import torch

from flowcore import experiment, guidance, losses, sampling, targets, train
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, sample_path
from flowcore.nn import Conditioning, TimeInputs
from flowcore.times import logit_normal_with_uniform, sample_pairs, uniform_grid


MLP_WIDTH = 384
"""The MLP's default width: with the v-head's own 4 blocks, 512 (the other digits recipes') takes 11.7 min (module docstring)."""


class Tangent(enum.Enum):
    """The z-part of the JVP tangent: iMF's guided v-head (v_c, no grad), or MeanFlow's sampled target velocity v_g."""
    HEAD = "head"
    TARGET = "target"

    def __str__(self) -> str:
        return self.value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=5000, batch=128, lr=1e-3, depth=4, out="runs/imf")
    p.add_argument("--derivative", type=Derivative, choices=list(Derivative), default=Derivative.JVP, help="du/dt back end (default: %(default)s)")
    p.add_argument("--time-inputs", type=TimeInputs, choices=list(TimeInputs), default=TimeInputs.T_GAP,
                   help="embedded times; iMF's DiT uses gap only (default: t_gap)")
    p.add_argument("--prediction", type=targets.Prediction, choices=list(targets.Prediction), default=targets.Prediction.V,
                   help="what the two heads output: v, the velocities themselves (iMF), or x with u = (z - x_u)/clip(t), as pMF (default: %(default)s)")
    p.add_argument("--t-floor", type=float, default=0.05, help="clip of t in u = (z - x)/t under --prediction x (default: %(default)s)")
    p.add_argument("--clipped-target", action=argparse.BooleanOptionalAction, default=True,
                   help="under --prediction x, regress onto (z - x)/clip(t), as pMF, rather than eps - x (default: %(default)s)")
    p.add_argument("--equal-fraction", type=float, default=0.5, help="fraction of rows with s = t (default: %(default)s)")
    p.add_argument("--t-mean", type=float, default=-0.4, help="logit-normal mean of t and s; pMF uses 0 (default: %(default)s)")
    p.add_argument("--t-std", type=float, default=1.0, help="logit-normal std of t and s; pMF uses 0.8 (default: %(default)s)")
    p.add_argument("--uniform-fraction", type=float, default=0.0, help="fraction of times drawn uniformly instead; pMF uses 0.1 (default: %(default)s)")
    p.add_argument("--equal-before-sort", action=argparse.BooleanOptionalAction, default=False,
                   help="the s = t rows take one draw's t (pMF) instead of the larger of two (iMF) (default: %(default)s)")
    p.add_argument("--omega-max", type=float, default=4.0, help="largest training guidance scale (default: %(default)s)")
    p.add_argument("--omega", type=float, default=1.0, help="guidance scale for sampling; 1 = unguided (1-NFE FD 1.59 vs 2.16 at 1.5, README imf rows) (default: %(default)s)")
    p.add_argument("--t-min", type=float, default=0.4, help="guidance interval start for sampling; iMF's code samples at [0.4, 0.65] (default: %(default)s)")
    p.add_argument("--t-max", type=float, default=0.65, help="guidance interval end for sampling (default: %(default)s)")
    p.add_argument("--interval", action=argparse.BooleanOptionalAction, default=True,
                   help="sample a guidance interval per s < t row (iMF); --no-interval: guidance over [0, 1] on every row (default: %(default)s)")
    experiment.add_aux_head_depth_arg(p, every_block=True)  # the v-head's own copies of every block: see the module docstring
    p.add_argument("--v-weight", type=float, default=1.0, help="weight of the v-head's loss, L = L_u + lambda L_v; iMF: 1 (default: %(default)s)")
    p.add_argument("--tangent", type=Tangent, choices=list(Tangent), default=Tangent.HEAD,
                   help="z-part of the JVP tangent: head, iMF's guided v-head v_c; target, MeanFlow's v_g (default: %(default)s)")
    p.add_argument("--label-drop", type=float, default=0.1, help="label dropout (default: %(default)s)")
    experiment.add_drop_on_equal_arg(p)
    p.add_argument("--p", type=float, default=0.0, help="adaptive-weight power, w = 1/(sg(L) + c)^p; 0 = plain squared error, iMF uses 1 (default: %(default)s)")
    p.add_argument("--c", type=float, default=1e-2, help="adaptive-weight constant, sum over dims (default: %(default)s)")
    p.add_argument("--beta2", type=float, default=0.95, help="Adam's beta2; iMF's 0.95 (default: %(default)s)")
    args = p.parse_args(argv)
    if args.width is None and args.model is experiment.ModelKind.MLP:
        args.width = MLP_WIDTH
    args = experiment.finalize_args(args)
    if not args.t_std > 0:
        raise SystemExit(f"--t-std must be > 0, got {args.t_std}")
    if args.v_weight < 0:
        raise SystemExit(f"--v-weight must be >= 0, got {args.v_weight}")
    if not 0.0 <= args.beta2 < 1.0:
        raise SystemExit(f"--beta2 must be in [0, 1), got {args.beta2}")
    if not (args.omega >= 1 and 0.0 <= args.t_min <= args.t_max <= 1.0):
        raise SystemExit(f"--omega must be >= 1 and 0 <= --t-min <= --t-max <= 1, got {args.omega}, [{args.t_min}, {args.t_max}]")
    return args


def conditions(omega: torch.Tensor, t_min: torch.Tensor, t_max: torch.Tensor) -> torch.Tensor:
    """The scalar inputs (B, 3): guidance feature 1 - 1/omega and the guidance interval."""
    return torch.stack([guidance.guidance_feature(omega), t_min, t_max], dim=1)


def instantaneous_target(z: torch.Tensor, x: torch.Tensor, v_t: torch.Tensor, t: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """The velocity the heads regress on: v_t = eps - x, or under --prediction x with --clipped-target (z - x)/clip(t), the
    velocity x heads can express below the clip (pMF's v_t); the two agree for t >= --t-floor."""
    if args.prediction is targets.Prediction.X and args.clipped_target:
        return targets.velocity_from_x_prediction(z, x, t, args.t_floor)
    return v_t


def jvp_tangent(kind: Tangent, v_c: torch.Tensor, v_g: torch.Tensor) -> torch.Tensor:
    """The z-part of the tangent (., 1) along which du/dt is taken: iMF's guided v-head output v_c, or MeanFlow's v_g."""
    return v_c if kind is Tangent.HEAD else v_g


def model_options(args: argparse.Namespace) -> dict:
    """The network beyond the common flags: (guidance, interval) inputs, the v-head, the embedded times, in-context tokens."""
    return {"n_scalar_conds": 3, "aux_head": True, "aux_head_depth": args.aux_head_depth, "time_inputs": TimeInputs(args.time_inputs), "conditioning": Conditioning.IN_CONTEXT}


def generators(student: torch.nn.Module, args: argparse.Namespace, source: experiment.Source) -> dict[str, experiment.Generator]:
    """1/2/4-NFE flow-map samplers of the u-head at (--omega, --t-min, --t-max) (also used by scripts/fd_draws.py)."""
    velocities = targets.velocity_network(student, args.prediction, args.t_floor)

    def flow_map(y: torch.Tensor) -> sampling.FlowMap:
        def u(z: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            at = lambda value: torch.full((y.shape[0],), float(value), dtype=z.dtype)  # noqa: E731
            return velocities(z, t, s, y, conditions(at(args.omega), at(args.t_min), at(args.t_max)))[0]
        return u

    return {f"{k}nfe": (lambda eps, y, k=k: sampling.flow_map_sample(flow_map(y), eps, uniform_grid(k))) for k in (1, 2, 4)}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.data != experiment.DIGITS:
        raise SystemExit("improved MeanFlow is a class-conditional recipe: use --data digits")
    run = experiment.setup(args, **model_options(args))
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr, betas=(0.9, args.beta2))
    t_dist = logit_normal_with_uniform(args.t_mean, args.t_std, args.uniform_fraction)
    path, derivative = LinearPath(), DirectionalDerivative(args.derivative)
    velocities = targets.velocity_network(net, args.prediction, args.t_floor)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = source.batch(args.batch // dist.world_size)
        n = x.shape[0]
        t, s = sample_pairs(n, t_dist, equal_fraction=args.equal_fraction, equal_before_sort=args.equal_before_sort)
        z, v_t = sample_path(path, x, torch.randn_like(x), t)
        v_t = instantaneous_target(z, x, v_t, t, args)
        t_min, t_max = guidance.sample_guidance_interval((t == s) | (not args.interval))
        ones = torch.ones(n)
        omega = guidance.sample_guidance_scale(n, args.omega_max)
        w = torch.where(guidance.within_interval(t, t_min, t_max), omega, ones)
        with torch.no_grad():
            _, v_both = velocities(torch.cat([z, z]), torch.cat([t, t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, source.null_class)]),
                            conditions(torch.cat([w, ones]), torch.zeros(2 * n), torch.ones(2 * n)))
        v_c, v_u = v_both.chunk(2)
        v_g = guidance.imf_guided_velocity(v_t, v_c, v_u, w)
        y, dropped = guidance.drop_labels(y, args.label_drop, source.null_class, among=(t == s) if args.drop_on_equal else None)
        v_g = torch.where(dropped.reshape(-1, 1, 1, 1), v_t, v_g).detach()
        c = conditions(omega, t_min, t_max)
        (u, v), (du_dt, _) = derivative(lambda z_, t_: velocities(z_, t_, s, y, c), (z, t), (jvp_tangent(args.tangent, v_c, v_g), torch.ones_like(t)))
        per_sample, loss_u, loss_v = losses.improved_meanflow_loss(targets.compound_velocity(u, du_dt, t, s), v, v_g, args.c, args.p, args.v_weight)
        loss = per_sample.mean()
        return loss, {"loss": loss.item(), "mse_u": loss_u.mean().item(), "mse_v": loss_v.mean().item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "imf", eval_flags=("omega", "t_min", "t_max"))
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()
    results, samples = experiment.evaluate(source, generators(student, args, source), n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "imf", "train_seconds": train_seconds, "steps": args.steps, "derivative": args.derivative.value,
                              "omega": args.omega, "interval": [args.t_min, args.t_max]})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
