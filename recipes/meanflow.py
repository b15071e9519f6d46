"""MeanFlow (Geng et al. 2025, arXiv 2505.13447): one network u(z, t, s) = F(z, t, s), the average
velocity from t to s, trained from scratch on the MeanFlow identity

    u_tgt = sg(v_g - (t - s) du/dt),   du/dt = J_u(z, t; s fixed) (v_g, 1)
    L = sum_d (u - u_tgt)^2 / sg(sum_d (u - u_tgt)^2 + c)^p          (adaptive weight, c = 0.01)

t, s sorted with s = t on 75% of the rows (the ImageNet config). Defaults per data:

    digits (the paper's ImageNet settings):  p = 1, t ~ logit-normal(-0.4, 1), constant learning rate, the network outputs u
    2D toys:                                 p = 0, t ~ U[0, 1] (--uniform-fraction 1), lr falling to 0 over the last 30%,
                                             the MLP on 64 random Fourier features of its input (--fourier-features 64),
                                             and x-prediction: the network outputs x_hat, u = (z - x_hat)/clip(t, 0.05)

Only the parameterisation changes with --prediction x; target and loss are MeanFlow's. A jump is then
z_s = (s/t) z + (1 - s/t) x_hat, and the 1-step sample is x_hat(eps, 1, 0) itself.

Why the 2D defaults differ (README MeanFlow rows; sliced W2 over the data-vs-data floor, 12000 steps):

- p = 1 biases a 2D field: its gradient is that of log(L + c) per row, a Cauchy-type regression that seeks a
  mode of the noisy conditional velocity instead of its mean. With many dimensions each row's L concentrates
  and the weight is nearly constant; with 2 it does not. 100 Euler steps on u(z, t, t): 0.18 to 0.23 in
  every p = 1 run, 0.055 at p = 0 (FM's own: 0.053). 1-NFE: 0.114 with the paper's settings, 0.069 with
  p = 0, uniform times and lr decay, 0.064 with the Fourier features too (rows meanflow_p1,
  meanflow_p0_uniform1_lr_decay, meanflow_12k).
- x-prediction (as pixel MeanFlow, Lu et al. 2026) brings the 1-step map within 2x of the floor on two of
  three seeds, and near it on the third. 1-NFE on
  seeds 0 / 1 / 2: 1.68x / 1.23x / 2.02x the floor outputting x (runs meanflow, meanflow_x_seed1,
  meanflow_x_seed2), 2.23x / 2.20x / 2.81x outputting u (runs meanflow_v, meanflow_seed1, meanflow_seed2).
  The gain is in the bulk of the noise: the 1-NFE map's mean distance to the FM teacher's ODE map from
  the same noise falls from 0.09-0.10 to 0.07-0.09 where ||eps|| < 1 and from 0.19-0.27 to 0.13-0.17
  where 2 <= ||eps|| < 2.5, while beyond 2.5 (4% of the draws) it stays at 0.36 to 0.39 either way
  (scripts/flow_map_error.py; the teacher's own 4-NFE distance, 0.09 to 0.28, says how far the
  reference itself is trustworthy). 2 NFE is worse than 1 with x (1.80x / 1.92x / 2.37x; not analysed
  further: a jump ending at s > 0 asks for x_hat = z - t u, a point off the data). Before x-prediction nothing
  else closed the gap: 16000 steps (2.21x / 2.16x), batch 512, Fourier scale 2, s = t on fewer rows,
  p = 0.5, EMA 0.9995 (README rows meanflow_16k*, meanflow_b512_8k_seed*, meanflow_seed1_*).

12000 steps by default, with the JVP and the loss compiled (--compile, on for 2D): forward-mode AD costs
each small op of the width-256 MLP a fixed overhead, so an eager JVP step takes 68 ms on 2 threads and a
compiled one 39 ms (bench/compiled_step.py; compiling once takes 7 to 21 s). The digits recipes' width-512
MLP is compute-bound and gains nothing (1.00x; bench/compiled_step.py --data digits), so --compile is off
there. On digits the target carries training-time CFG, v_g = omega v + kappa u(z,t,t|y) + (1 - omega - kappa)
u(z,t,t|null) with 10% label dropout, so one network step is a guided sample. The official code drops the
labels of a batch's first rows, which are its s = t rows; --drop-on-equal does so, where by default any row may lose its
label. With uaimf.py's settings (7000 steps, p = 0.5, lr decay, no CFG) it raised the 1-NFE FD from 1.04 to 1.14 (means
of 5 draws 1.18 to 1.28; run meanflow_digits_p0.5_lr_decay_no_cfg_drop_on_equal). Sampling: z_s = z_t + (s - t) u
on a uniform grid, 1, 2 and 4 NFE, and 100 Euler steps on the diagonal u(z, t, t) (velocity_euler100).

    python recipes/meanflow.py                          # 2D checkerboard (default)
    python recipes/meanflow.py --p 1 --uniform-fraction 0 --lr-decay 0 --fourier-features 0 --prediction v --out runs/meanflow_p1   # the paper's settings on 2D
    python recipes/meanflow.py --data digits --derivative fd
"""

from __future__ import annotations

import argparse

import torch

from flowcore import experiment, guidance, losses, targets, train
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, sample_path
from flowcore.times import logit_normal_with_uniform, sample_pairs


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="checkerboard", steps=12000, batch=256, lr=1e-3, depth=4, out="runs/meanflow")
    p.add_argument("--derivative", type=Derivative, choices=list(Derivative), default=Derivative.JVP, help="du/dt back end (default: %(default)s)")
    p.add_argument("--equal-fraction", type=float, default=0.75, help="fraction of rows with s = t (default: %(default)s)")
    p.add_argument("--uniform-fraction", type=float, default=None,
                   help="fraction of times drawn uniformly instead of logit-normal(-0.4, 1) (default: 0 on digits, 1 on 2D)")
    p.add_argument("--prediction", type=targets.Prediction, choices=list(targets.Prediction), default=None,
                   help="what the network outputs: v, the average velocity itself (the paper; default on digits), or x with u = (z - x)/clip(t), as pMF (default on 2D)")
    p.add_argument("--t-floor", type=float, default=0.05, help="clip of t in u = (z - x)/t under --prediction x (default: %(default)s)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the derivative and the loss (default: on for 2D, off on digits and with --smoke)")
    experiment.add_meanflow_loss_args(p)
    p.set_defaults(p=None, lr_decay=None, fourier_features=None)
    per_data_help = {"p": "adaptive-weight power (default: 1 on digits, the paper's; 0 on 2D)",
                     "lr_decay": "fraction of the run, at its end, over which the learning rate falls linearly to 0 (default: 0 on digits, 0.3 on 2D)",
                     "fourier_features": "MLP: random Fourier features of the input, 0 = the raw input (default: 0 on digits, 64 on 2D)"}
    for action in p._actions:  # the shared flags' help, with their per-data defaults
        action.help = per_data_help.get(action.dest, action.help)
    return experiment.finalize_args(with_data_defaults(p.parse_args(argv)))


DIGITS_DEFAULTS = {"p": 1.0, "uniform_fraction": 0.0, "lr_decay": 0.0, "fourier_features": 0, "compile": False, "prediction": targets.Prediction.V}
TOY_DEFAULTS = {"p": 0.0, "uniform_fraction": 1.0, "lr_decay": 0.3, "fourier_features": 64, "compile": True, "prediction": targets.Prediction.X}
"""The flags whose default depends on --data (see the module docstring for why 2D differs)."""


def with_data_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill each flag of DIGITS_DEFAULTS / TOY_DEFAULTS left unset (None) with its value for --data
    (--smoke leaves --compile off: compiling takes longer than a smoke run)."""
    if args.smoke and args.compile is None:
        args.compile = False
    for name, value in (DIGITS_DEFAULTS if args.data == experiment.DIGITS else TOY_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def generators(student: torch.nn.Module, args: argparse.Namespace, source: experiment.Source) -> dict[str, experiment.Generator]:
    """1/2/4-NFE flow-map jumps and 100 Euler steps on the diagonal u(z, t, t) of the network under --prediction
    (also used by scripts/fd_draws.py)."""
    u = targets.velocity_network(student, args.prediction, args.t_floor)
    return experiment.flow_map_generators(u) | experiment.diagonal_velocity_generator(u)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    run = experiment.setup(args)
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr)
    t_dist = logit_normal_with_uniform(-0.4, 1.0, args.uniform_fraction)
    path, derivative = LinearPath(), DirectionalDerivative(args.derivative)

    u_net = targets.velocity_network(net, args.prediction, args.t_floor)

    def meanflow_regression(z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, v: torch.Tensor,
                            y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean_B w ||u - sg(u_tgt)||^2, per-row ||u - sg(u_tgt)||^2), u_tgt = v - (t - s) du/dt."""
        u, du_dt = derivative(lambda z_, t_: u_net(z_, t_, s, y), (z, t), (v, torch.ones_like(t)))
        u_tgt = targets.meanflow_target(v, t, s, du_dt).detach()
        per_sample = losses.squared_error(u, u_tgt, losses.Reduce.SUM)
        return losses.adaptively_weighted(per_sample, args.p, args.c).mean(), per_sample

    regression = torch.compile(meanflow_regression) if args.compile else meanflow_regression

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = source.batch(args.batch // dist.world_size)
        t, s = sample_pairs(x.shape[0], t_dist, equal_fraction=args.equal_fraction)
        z, v = sample_path(path, x, torch.randn_like(x), t)
        if y is not None:
            y, dropped = guidance.drop_labels(y, args.label_drop, source.null_class, among=(t == s) if args.drop_on_equal else None)
            v = guidance.meanflow_training_velocity(u_net, z, t, v, y, dropped, source.null_class, args.omega, args.kappa)
        loss, per_sample = regression(z, t, s, v, y)
        return loss, {"loss": loss.item(), "mse": per_sample.mean().item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "meanflow")
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()
    results, samples = experiment.evaluate(source, generators(student, args, source), n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history, {"recipe": "meanflow", "train_seconds": train_seconds, "steps": args.steps, "derivative": args.derivative.value, "prediction": args.prediction.value})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
