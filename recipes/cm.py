"""Consistency models (Song et al. 2023, arXiv 2303.01469) and improved consistency training (iCT,
Song & Dhariwal 2023, arXiv 2310.14189) on flowcore's linear path z_t = (1 - t) x + t eps.

    f(z_t, t) = c_skip(t) z_t + c_out(t) F(z_t, t)      EDM's skip/out in sigma = t / (1 - t), landing at
                                                         t_min = sigma_min / (1 + sigma_min): f(z, t_min) = z
    grid t_i = sigma_i / (1 + sigma_i), Karras sigmas (sigma_min 0.002, sigma_max 80 -> t_max = 80/81, rho 7)
    pair (t, s) = (t_{n+1}, t_n),  L = E lambda d(f(z_t, t), sg f_target(z_s, s))

  cd   z_s = one Heun step of the FM teacher (CFG 1.5 on digits) from t to s; fixed N; target = EMA(mu) of the student; d = L2;
       the student starts as the teacher (as the official code copies its EDM teacher's weights): its network's linear-path
       velocity v is read as EDM's F (targets.edm_output_of_linear_velocity), so that at the start f(z_t, t) is the teacher's
       denoiser z_t - t v away from t_min; --no-teacher-init: a fresh network that outputs F
  ct   z_s = (1 - s) x + s eps with the same eps; N(k) = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1 (s0 2, s1 150);
       target EMA mu(k) = exp(s0 log(mu0) / N(k)), mu0 = 0.9; d = L2
  ict  as ct, but no EMA teacher (target = sg student), pseudo-Huber d (c = 0.00054 sqrt(dim)), lambda = 1/(sigma_{n+1} - sigma_n),
       pairs from the discrete log-normal (P_mean -1.1, P_std 2.0), doubling N(k) = min(s0 2^floor(k/K'), s1) + 1 (s0 10, s1 1280)

Sampling: multistep consistency sampling, x = f(z, t_i), z = (1 - t_{i+1}) x + t_{i+1} eps', 1/2/4 NFE with the
intermediate times from sigma_mid = 0.821 (t = 0.451; the 2-step middle noise level used for CIFAR-10 consistency models) evenly down to 0.

    python recipes/cm.py                                   # CD from runs/fm on digits
    python recipes/cm.py --mode ct  --out runs/cm_ct       # consistency training from scratch
    python recipes/cm.py --mode ict --out runs/cm_ict
    python recipes/cm.py --data checkerboard --out runs/cm_checkerboard
"""

from __future__ import annotations

import argparse
import copy
import enum
import math
from pathlib import Path

import torch

from flowcore import experiment, guidance, losses, sampling, targets, times, train
from flowcore.interpolants import LinearPath, sample_path


class CMMode(enum.Enum):
    CD = "cd"
    CT = "ct"
    ICT = "ict"

    def __str__(self) -> str:
        return self.value


class Metric(enum.Enum):
    L2 = "l2"
    HUBER = "huber"

    def __str__(self) -> str:
        return self.value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=6000, batch=128, lr=5e-4, depth=4, out="runs/cm")
    p.add_argument("--mode", type=CMMode, choices=list(CMMode), default=CMMode.CD, help="cd, ct or ict (default: %(default)s)")
    p.add_argument("--teacher", type=Path, default=None, help="CD: FM checkpoint (default: runs/fm, trained first if missing)")
    p.add_argument("--teacher-init", action=argparse.BooleanOptionalAction, default=True,
                   help="CD: the student is the teacher's network and weights, its velocity read as EDM's F; "
                        "--no-teacher-init: a fresh network that outputs F (default: on)")
    p.add_argument("--cfg", type=float, default=1.5, help="CD: CFG scale of the teacher on digits (default: %(default)s)")
    p.add_argument("--grid", type=int, default=18, help="CD: number of grid points N (default: %(default)s)")
    p.add_argument("--target-ema", type=float, default=0.95, help="CD: EMA decay mu of the target network (default: %(default)s)")
    p.add_argument("--s0", type=int, default=None, help="CT/iCT: initial grid size parameter (default: 2 ct, 10 ict)")
    p.add_argument("--s1", type=int, default=None, help="CT/iCT: final grid size parameter (default: 150 ct, 1280 ict)")
    p.add_argument("--curriculum-steps", type=int, default=None, help="CT/iCT: horizon K of the N(k) curriculum (default: --steps)")
    p.add_argument("--mu0", type=float, default=0.9, help="CT: target EMA decay at N = s0 (default: %(default)s)")
    p.add_argument("--metric", type=Metric, choices=list(Metric), default=None, help="distance d (default: huber for ict, else l2)")
    p.add_argument("--sigma-data", type=float, default=0.5, help="EDM sigma_d of c_skip, c_out (default: %(default)s)")
    p.add_argument("--sigma-min", type=float, default=0.002, help="boundary noise level (default: %(default)s)")
    p.add_argument("--sigma-max", type=float, default=80.0, help="largest noise level (default: %(default)s)")
    p.add_argument("--sigma-mid", type=float, default=0.821, help="first re-noising level of multistep sampling (default: %(default)s)")
    args = experiment.finalize_args(p.parse_args(argv))
    ict = args.mode is CMMode.ICT
    args.s0 = args.s0 if args.s0 is not None else (10 if ict else 2)
    args.s1 = args.s1 if args.s1 is not None else (1280 if ict else 150)
    args.curriculum_steps = args.curriculum_steps or args.steps
    args.metric = args.metric or (Metric.HUBER if ict else Metric.L2)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    teacher_init = args.mode is CMMode.CD and args.teacher_init
    if args.mode is CMMode.CD:
        run, teacher = experiment.setup_distillation(args, init_from_teacher=teacher_init)
    else:
        run, teacher = experiment.setup(args), None
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    target = copy.deepcopy(run.model).requires_grad_(False)
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr)
    path, dim = LinearPath(), math.prod(source.shape)
    t_max = times.time_of_sigma(torch.tensor(args.sigma_max)).item()
    huber_c = 0.00054 * math.sqrt(dim)

    def teacher_field(y: torch.Tensor | None) -> sampling.VelocityField:
        if y is None:
            return lambda z, t: teacher(z, t, t)
        return sampling.velocity_of(guidance.guided(teacher, y, args.cfg, source.null_class))

    def consistency(model: torch.nn.Module, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """f(z, t) = c_skip z + c_out F, F the network's output or, with --teacher-init, its velocity read as EDM's F."""
        out = model(z, t, t, y)
        F = targets.edm_output_of_linear_velocity(out, z, t, args.sigma_data) if teacher_init else out
        return targets.consistency_function(z, F, t, args.sigma_data, args.sigma_min)

    def schedule(step: int) -> tuple[int, float]:
        """(grid size N, target EMA decay mu) at this step."""
        if args.mode is CMMode.CD:
            return args.grid, args.target_ema
        if args.mode is CMMode.CT:
            n = times.ct_discretization(min(step, args.curriculum_steps), args.curriculum_steps, args.s0, args.s1)
            return n, times.ct_target_decay(n, args.s0, args.mu0)
        return times.ict_discretization(min(step, args.curriculum_steps), args.curriculum_steps, args.s0, args.s1), 0.0

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        n_grid, mu = schedule(step)
        if step > 0:  # theta^- <- mu theta^- + (1 - mu) theta, after the previous optimizer step
            with torch.no_grad():
                for p_target, p in zip(target.parameters(), run.model.parameters()):
                    p_target.lerp_(p, 1.0 - mu)
        x, y = source.batch(args.batch // dist.world_size)
        grid = times.karras_times(n_grid, args.sigma_min, args.sigma_max)
        probs = times.ict_pair_probabilities(grid) if args.mode is CMMode.ICT else None
        t, s = times.sample_grid_pairs(x.shape[0], grid, probs)
        eps = torch.randn_like(x)
        z_t, _ = sample_path(path, x, eps, t)
        with torch.no_grad():
            z_s = sampling.heun_step(teacher_field(y), z_t, t, s) if teacher is not None else sample_path(path, x, eps, s)[0]
            f_target = consistency(target, z_s, s, y)
        f = consistency(net, z_t, t, y)
        if args.metric is Metric.HUBER:
            distance = losses.pseudo_huber(f, f_target, huber_c)
        else:
            distance = losses.squared_error(f, f_target, losses.Reduce.MEAN)
        weight = losses.consistency_gap_weight(t, s) if args.mode is CMMode.ICT else torch.ones_like(t)
        loss = (weight * distance).mean()
        return loss, {"loss": loss.item(), "distance": distance.mean().item(), "grid": float(n_grid)}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, f"cm-{args.mode}", extra_modules={"target": target})
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()
    t_mid = times.time_of_sigma(torch.tensor(args.sigma_mid)).item()

    def generate(k: int) -> experiment.Generator:
        grid = sampling.consistency_times(k, t_max, t_mid)
        return lambda eps, y: sampling.consistency_sample(lambda z, t: consistency(student, z, t, y), eps, grid, path,
                                                          torch.Generator().manual_seed(args.seed + k))

    generators = {f"{k}nfe": generate(k) for k in (1, 2, 4)}
    if teacher is not None:
        generators["teacher_heun50"] = lambda eps, y: sampling.heun(teacher_field(y), eps, times.uniform_grid(50))
    results, samples = experiment.evaluate(source, generators, n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "cm", "mode": args.mode.value, "train_seconds": train_seconds, "steps": args.steps,
                              "teacher_init": teacher_init})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
