"""MeanFlow (Geng et al. 2025, arXiv 2505.13447): one network u(z, t, s) = F(z, t, s), the average
velocity from t to s, trained from scratch on the MeanFlow identity

    u_tgt = sg(v_g - (t - s) du/dt),   du/dt = J_u(z, t; s fixed) (v_g, 1)
    L = sum_d (u - u_tgt)^2 / sg(sum_d (u - u_tgt)^2 + c)^p          (adaptive weight, c = 0.01)

t, s sorted with s = t on 75% of the rows (the ImageNet config). Defaults per data:

    digits (the paper's ImageNet settings):  p = 1, t ~ logit-normal(-0.4, 1), constant learning rate
    2D toys:                                 p = 0, t ~ U[0, 1] (--uniform-fraction 1), lr falling to 0 over the last 30%,
                                             the MLP on 64 random Fourier features of its input (--fourier-features 64)

On 2D the paper's p = 1 biases the field: its gradient is that of log(L + c) per row, a robust
(Cauchy-type) regression that seeks a mode of the noisy conditional velocity instead of its mean. With
many dimensions each row's L concentrates near its mean and the weight is nearly a constant; with 2 it
does not. Checkerboard sliced W2 of 100 Euler steps on u(z, t, t): 0.18 to 0.23 in every p = 1 run,
0.055 at p = 0 (FM's own: 0.053). 1-NFE sliced W2 at 12000 steps: 0.114 with the paper's settings, 0.069
with p = 0, uniform times and lr decay, 0.064 with the Fourier features too (README rows meanflow_p1,
meanflow_p0_uniform1_lr_decay, meanflow_12k).

12000 steps by default, with the JVP and the loss compiled (--compile, on for 2D): forward-mode AD costs
each small op of the width-256 MLP a fixed overhead, so an eager JVP step takes 68 ms on 2 threads and a
compiled one 39 ms (bench/compiled_step.py; compiling once takes 7 to 21 s). The digits recipes' width-512
MLP is compute-bound and gains nothing (1.00x; bench/compiled_step.py --data digits), so --compile is off there. Not compiled, the 10-minute budget held 8000 steps;
compiled, 15000 steps took 10.3 min. The 1-NFE map is the slow part and varies from run to run: 1-NFE SW2
on seeds 0 / 1 / 2 was 0.089 / 0.086 / 0.099 at 8000 steps and 0.064 / 0.079 / 0.070 at 12000 (floor
0.033 / 0.034 / 0.029; 0.065 on seed 0 at 15000), and 0.073 / 0.074 / 0.083 with the compiled default,
while 4 NFE and the diagonal velocity are near FM's 0.053 in most runs (README, MeanFlow rows). The 1-NFE
error grows into the Gaussian's tail: its mean distance to the FM teacher's ODE map from the same noise is
0.09 to 0.16 where ||eps|| < 2 (4 NFE: 0.09 to 0.11) and 0.36 to 0.38 beyond 2.5 (4 NFE: 0.17 to 0.19) on
seeds 0 to 2 (scripts/flow_map_error.py), and the tail piles up on the outer squares' rims. Batch 512 for 8000 steps, the
same wall clock, and Fourier scale 2 did not help (README rows meanflow_b512_8k_seed*, meanflow_seed1_fourier_scale2). Nor did 16000 steps
(a fused Adam step makes them fit the budget): 1-NFE SW2 0.072 / 0.073 on seeds 0 / 1, 2.21x / 2.16x the floor (README rows
meanflow_16k*). On digits the target carries training-time
CFG, v_g = omega v + kappa u(z,t,t|y) + (1 - omega - kappa) u(z,t,t|null) with 10% label dropout, so one
network step is a guided sample. Sampling: z_s = z_t + (s - t) u on a uniform grid, 1, 2 and 4 NFE, and
100 Euler steps on the diagonal u(z, t, t) (velocity_euler100).

    python recipes/meanflow.py                          # 2D checkerboard (default)
    python recipes/meanflow.py --p 1 --uniform-fraction 0 --lr-decay 0 --fourier-features 0 --out runs/meanflow_p1   # the paper's settings on 2D
    python recipes/meanflow.py --data digits --derivative fd
"""

from __future__ import annotations

import argparse

import torch

from flowcore import experiment, guidance, losses, targets, train
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, sample_path
from flowcore.times import LogitNormal, Mixture, Uniform, sample_pairs


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="checkerboard", steps=12000, batch=256, lr=1e-3, depth=4, out="runs/meanflow")
    p.add_argument("--derivative", type=Derivative, choices=list(Derivative), default=Derivative.JVP, help="du/dt back end (default: %(default)s)")
    p.add_argument("--equal-fraction", type=float, default=0.75, help="fraction of rows with s = t (default: %(default)s)")
    p.add_argument("--uniform-fraction", type=float, default=None,
                   help="fraction of times drawn uniformly instead of logit-normal(-0.4, 1) (default: 0 on digits, 1 on 2D)")
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


DIGITS_DEFAULTS = {"p": 1.0, "uniform_fraction": 0.0, "lr_decay": 0.0, "fourier_features": 0, "compile": False}
TOY_DEFAULTS = {"p": 0.0, "uniform_fraction": 1.0, "lr_decay": 0.3, "fourier_features": 64, "compile": True}
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


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    run = experiment.setup(args)
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr)
    t_dist = LogitNormal(-0.4, 1.0)
    if args.uniform_fraction > 0:
        t_dist = Mixture((t_dist, Uniform()), (1 - args.uniform_fraction, args.uniform_fraction))
    path, derivative = LinearPath(), DirectionalDerivative(args.derivative)

    def meanflow_regression(z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, v: torch.Tensor,
                            y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean_B w ||u - sg(u_tgt)||^2, per-row ||u - sg(u_tgt)||^2), u_tgt = v - (t - s) du/dt."""
        u, du_dt = derivative(lambda z_, t_: net(z_, t_, s, y), (z, t), (v, torch.ones_like(t)))
        u_tgt = targets.meanflow_target(v, t, s, du_dt).detach()
        per_sample = losses.squared_error(u, u_tgt, losses.Reduce.SUM)
        return losses.adaptively_weighted(per_sample, args.p, args.c).mean(), per_sample

    regression = torch.compile(meanflow_regression) if args.compile else meanflow_regression

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = source.batch(args.batch // dist.world_size)
        t, s = sample_pairs(x.shape[0], t_dist, equal_fraction=args.equal_fraction)
        z, v = sample_path(path, x, torch.randn_like(x), t)
        if y is not None:
            y, dropped = guidance.drop_labels(y, args.label_drop, source.null_class)
            v = guidance.meanflow_training_velocity(net, z, t, v, y, dropped, source.null_class, args.omega, args.kappa)
        loss, per_sample = regression(z, t, s, v, y)
        return loss, {"loss": loss.item(), "mse": per_sample.mean().item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "meanflow")
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()
    generators = experiment.flow_map_generators(student) | experiment.diagonal_velocity_generator(student)
    results, samples = experiment.evaluate(source, generators, n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history, {"recipe": "meanflow", "train_seconds": train_seconds, "steps": args.steps, "derivative": args.derivative.value})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
