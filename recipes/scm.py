"""Continuous-time consistency models, sCM (Lu & Song 2024, arXiv 2410.11081), with TrigFlow.

TrigFlow x_theta = cos(theta) x + sin(theta) sigma_d n, theta in [0, pi/2], is run in flowcore's units: z = x_theta / sigma_d
is the CosinePath point of x / sigma_d at t = 2 theta / pi (t = 1 noise), and the student F(z, t) gives

    x_hat = cos(theta) z - sin(theta) F                       (sCM's f = sigma_d x_hat)
    g = -cos^2(theta) (F^- - dz/dtheta) - r sin(theta) cos(theta) (z + dF^-/dtheta),   F^- = sg F, dF^-/dtheta by --derivative
    g <- g / (||g|| + c / sigma_d)                            (tangent normalisation, c = 0.1 on x_theta's scale)
    L = e^{w(t)} mean_d (F - sg(F^- + g))^2 - w(t)           (learned adaptive weight w, EDM2-style; = losses.learned_log_variance with lv = -w)

with the tangent warm-up r rising linearly 0 -> 1 over --tangent-warmup steps and theta = arctan(e^tau / sigma_d),
tau ~ N(-1.0, 1.4^2) (EDM's log sigma). dz/dtheta is cos(theta) n - sin(theta) x / sigma_d for sCT (from data) and
the FM teacher's velocity for sCD, queried at the same (x, n) on the linear path (t_lin = sigma_d sin / (cos + sigma_d sin))
and converted (interpolants.trigflow_velocity_from_linear), with CFG 1.5 on digits. The sCD student starts as the
teacher: F(z, t) is the teacher's network and weights, its linear-path velocity read at the same point and converted
the same way (interpolants.trigflow_velocity_of_linear_model; rCM wraps its rectified-flow teacher so), so training
starts from the teacher's (unguided) field; --no-teacher-init trains a fresh network that outputs F. Sampling: x = sigma_d x_hat from
z = n at t = 1; 2 and 4 steps re-noise to theta = 1.1 (the paper's 2-step middle time, t = 0.70) and evenly below.
The default trains 5500 steps, cut from 6000 to fit the 10-minute budget (bench/default_wall_time.py: 99.5 ms per
step on 2 threads); the stabilisation ablations (scm_unstabilised, scm_fresh*) ran 6000 steps, beside scm_6k.

    python recipes/scm.py                                         # sCD from runs/fm on digits
    python recipes/scm.py --mode sct --out runs/scm_sct           # sCT from data
    python recipes/scm.py --steps 6000 --no-tangent-norm --tangent-warmup 0 --out runs/scm_unstabilised   # vs --steps 6000 --out runs/scm_6k
"""

from __future__ import annotations

import argparse
import enum
import math
from pathlib import Path

import torch

from flowcore import experiment, guidance, losses, sampling, targets, train
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import CosinePath, sample_path, trigflow_velocity_of_linear_model
from flowcore.nn import TimePairLogVariance
from flowcore.times import TrigFlowLogNormal


class SCMMode(enum.Enum):
    SCD = "scd"
    SCT = "sct"

    def __str__(self) -> str:
        return self.value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=5500, batch=128, lr=5e-4, depth=4, out="runs/scm")
    p.add_argument("--mode", type=SCMMode, choices=list(SCMMode), default=SCMMode.SCD, help="scd (teacher) or sct (data) (default: %(default)s)")
    p.add_argument("--teacher", type=Path, default=None, help="sCD: FM checkpoint (default: runs/fm, trained first if missing)")
    p.add_argument("--teacher-init", action=argparse.BooleanOptionalAction, default=True,
                   help="sCD: the student is the teacher's network and weights, read as TrigFlow's F through the linear-to-TrigFlow "
                        "conversion (as rCM wraps its rectified-flow teacher); --no-teacher-init: a fresh network that outputs F (default: on)")
    p.add_argument("--cfg", type=float, default=1.5, help="sCD: CFG scale of the teacher on digits (default: %(default)s)")
    p.add_argument("--derivative", type=Derivative, choices=list(Derivative), default=Derivative.JVP, help="dF/dtheta back end (default: %(default)s)")
    p.add_argument("--sigma-data", type=float, default=0.5, help="TrigFlow sigma_d (default: %(default)s)")
    p.add_argument("--p-mean", type=float, default=-1.0, help="mean of log(sigma_d tan theta) (default: %(default)s)")
    p.add_argument("--p-std", type=float, default=1.4, help="std of log(sigma_d tan theta) (default: %(default)s)")
    p.add_argument("--tangent-warmup", type=int, default=1000, help="steps of the linear tangent warm-up r: 0 -> 1; 0 = off (default: %(default)s)")
    p.add_argument("--tangent-c", type=float, default=0.1, help="tangent normalisation constant on x_theta's scale (default: %(default)s)")
    p.add_argument("--no-tangent-norm", action="store_true", help="turn the tangent normalisation off")
    p.add_argument("--no-adaptive-weight", action="store_true", help="turn the learned weight w(t) off (plain mean squared error)")
    p.add_argument("--theta-mid", type=float, default=1.1, help="TrigFlow angle of the first re-noising in multistep sampling (default: %(default)s)")
    return experiment.finalize_args(p.parse_args(argv))


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    teacher_init = args.mode is SCMMode.SCD and args.teacher_init
    if args.mode is SCMMode.SCD:
        run, teacher = experiment.setup_distillation(args, init_from_teacher=teacher_init)
    else:
        run, teacher = experiment.setup(args), None
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    sd = args.sigma_data
    weight = None if args.no_adaptive_weight else TimePairLogVariance().to(dist.device)
    optimizer = torch.optim.Adam([*run.model.parameters(), *([] if weight is None else weight.parameters())], lr=args.lr)
    path, t_dist, derivative = CosinePath(), TrigFlowLogNormal(args.p_mean, args.p_std, sd), DirectionalDerivative(args.derivative)

    def teacher_velocity(z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The FM teacher's velocity at the TrigFlow point (z, t), as dz/dtheta."""
        field = teacher if y is None else guidance.guided(teacher, y, args.cfg, source.null_class)
        return trigflow_velocity_of_linear_model(lambda z_, t_: field(z_, t_, t_), z, t, sd)

    def trigflow_F(model: torch.nn.Module, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The student's F(z, t): the network's output, or with --teacher-init its linear-path velocity converted."""
        if teacher_init:
            return trigflow_velocity_of_linear_model(lambda z_, t_: model(z_, t_, t_, y), z, t, sd)
        return model(z, t, t, y)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = source.batch(args.batch // dist.world_size)
        t = t_dist.sample(x.shape[0])
        z, v_t = sample_path(path, x / sd, torch.randn_like(x), t)  # v_t = dz/dt = (pi/2) dz/dtheta
        with torch.no_grad():
            dz_dtheta = teacher_velocity(z, t, y) if teacher is not None else v_t * (2 / math.pi)
        F, dF_dtheta = derivative(lambda z_, t_: trigflow_F(net, z_, t_, y), (z, t), (dz_dtheta, torch.full_like(t, 2 / math.pi)))
        r = min(1.0, step / args.tangent_warmup) if args.tangent_warmup > 0 else 1.0
        g = targets.scm_tangent(z, F.detach(), dz_dtheta, dF_dtheta, t, r)
        if not args.no_tangent_norm:
            g = targets.normalize_tangent(g, args.tangent_c / sd)
        mse = losses.squared_error(F, (F.detach() + g).detach(), losses.Reduce.MEAN)
        loss = (mse if weight is None else losses.learned_log_variance(mse, weight(t, t))).mean()
        return loss, {"loss": loss.item(), "mse": mse.mean().item(), "tangent_norm": g.flatten(1).norm(dim=1).mean().item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, f"scm-{args.mode}",
                                                     extra_modules={} if weight is None else {"weight": weight})
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()

    def generate(k: int) -> experiment.Generator:
        grid = sampling.consistency_times(k, 1.0, 2 * args.theta_mid / math.pi)
        denoise = lambda y: (lambda z, t: targets.trigflow_denoised(z, trigflow_F(student, z, t, y), t))  # noqa: E731
        return lambda eps, y: sd * sampling.consistency_sample(denoise(y), eps, grid, path, torch.Generator().manual_seed(args.seed + k))

    results, samples = experiment.evaluate(source, {f"{k}nfe": generate(k) for k in (1, 2, 4)}, n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "scm", "mode": args.mode.value, "train_seconds": train_seconds, "steps": args.steps,
                              "derivative": args.derivative.value})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
