"""FreeFlow: flow-map distillation without data (Tong, Ma, Xie, Jaakkola 2025, arXiv 2511.19428).

The student F(z, 1, s) starts from pure noise z ~ N(0, I) at t = 1 (the one place where teacher and
student agree by construction); no training example is ever loaded. Its path f(z, s) = z + (s - 1) F
lands at time s (the paper's jump delta = 1 - s), and 1 NFE is x = z - F(z, 1, 0).

    prediction:  L_pred = w sum_d (F - sg(v(f, s) - (s - 1) dF/ds))^2,   s ~ U[0, 1],  w = 1/sg(L + c)^p
                 (the residual is df/ds - v(f, s): the student's generating velocity must ride the
                 teacher's field v along the student's own path; dF/ds by JVP or finite difference)
    correction:  grad = (v_N(I_r, r) - v(I_r, r))^T dF(z, 1, 0)/dtheta,   I_r = (1 - r) sg(x_hat) + r n,
                 r ~ LN(0, 1), v_N the velocity of the student's noising marginals: an auxiliary
                 network (initialised from the teacher) fitted by flow matching to student samples
    L = L_pred + lambda L_corr + L_aux     (one Adam, disjoint parameters, so updates are simultaneous)

The teacher is recipes/fm.py (on digits with CFG 1.5, the scale its heun50 number uses); the student
and v_N start from its weights, labels are drawn uniformly. Evaluation (the only place data is read)
scores the 1-step student next to the teacher's 50-step Heun samples from the same noise.

The digits defaults buy steps within the 10-minute budget: dF/ds by a forward finite difference (no
gradient flows through it, and it costs one extra forward without gradient), batch 64,
a fused Adam step, 5000 steps with the learning rate falling to 0 over the last 30%. Measured (1-NFE FD on
the evaluation's draw / mean of 5 draws, scripts/fd_draws.py; the teacher's Heun 50: 0.78 / 0.99):

    default (batch 64, fd, 5000 steps, lr decay 0.3)              1.15 / 1.39
    the same for 4000 steps                                        1.24 / 1.49
    batch 128, JVP, 4000 steps, lr decay 0.3 (over budget)        1.21 / 1.43
    default without the correction loss (--no-correction)          1.50 / 1.69
    earlier default: batch 128, JVP, 2000 steps, constant lr       2.08 / 2.36   (3.79 without the correction)

    python recipes/freeflow.py                                      # digits, prediction + correction
    python recipes/freeflow.py --no-correction --out runs/freeflow_no_correction
    python recipes/freeflow.py --data checkerboard --steps 6000 --batch 128 --lr 3e-4 --lr-decay 0 --derivative jvp --out runs/freeflow_checkerboard   # 2D (1 NFE 0.99x the teacher)
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from flowcore import experiment, guidance, losses, sampling, targets, train
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, sample_path
from flowcore.times import LogitNormal, Uniform, uniform_grid


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=5000, batch=64, lr=1e-4, depth=4, out="runs/freeflow")
    p.set_defaults(lr_decay=0.3)  # with batch 64 and --derivative fd: see the module docstring
    p.add_argument("--teacher", type=Path, default=None, help="FM checkpoint (default: runs/fm or runs/fm_<toy>, trained first if missing)")
    p.add_argument("--derivative", type=Derivative, choices=list(Derivative), default=Derivative.FD, help="dF/ds back end (default: %(default)s)")
    p.add_argument("--no-correction", action="store_true", help="ablation: the prediction loss alone (no auxiliary network)")
    p.add_argument("--correction-weight", type=float, default=1.0, help="lambda of the correction term (default: %(default)s)")
    p.add_argument("--aux-lr", type=float, default=None, help="learning rate of the auxiliary v_N (default: --lr)")
    p.add_argument("--p", type=float, default=1.0, help="adaptive-weight power of the prediction loss, 0 = plain squared error (default: %(default)s)")
    p.add_argument("--c", type=float, default=1e-2, help="adaptive-weight constant, on a sum over dims (default: %(default)s)")
    p.add_argument("--cfg", type=float, default=1.5, help="teacher CFG scale on digits (default: %(default)s)")
    p.add_argument("--teacher-steps", type=int, default=50, help="Heun steps of the teacher reference (default: %(default)s)")
    args = experiment.finalize_args(p.parse_args(argv))
    if args.aux_lr is None:
        args.aux_lr = args.lr
    if args.correction_weight < 0 or args.cfg < 1 or args.teacher_steps < 1:
        raise SystemExit(f"need --correction-weight >= 0, --cfg >= 1, --teacher-steps >= 1; got {args.correction_weight}, {args.cfg}, {args.teacher_steps}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    # data-free: no example is loaded for training
    run, teacher = experiment.setup_distillation(args, init_from_teacher=True, source=experiment.source_without_data(args.data))
    model, source, dist = run.model, run.source, run.dist
    net, null = run.net, source.null_class
    groups = [{"params": list(model.parameters()), "lr": args.lr}]
    fake = None
    if not args.no_correction:
        fake = copy.deepcopy(teacher).requires_grad_(True).train()
        groups.append({"params": list(fake.parameters()), "lr": args.aux_lr})
    optimizer = torch.optim.Adam(groups, fused=True)
    path, s_dist, r_dist, derivative = LinearPath(), Uniform(0.0, 1.0), LogitNormal(0.0, 1.0), DirectionalDerivative(args.derivative)
    w = args.cfg if source.conditional else 1.0

    def teacher_velocity(z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            return teacher(z, t, t) if y is None else guidance.guided(teacher, y, w, null)(z, t, t)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        n = args.batch // dist.world_size
        z = torch.randn(n, *source.shape)
        y = torch.randint(source.num_classes, (n,)) if source.conditional else None
        one, s = torch.ones(n), s_dist.sample(n)
        F, dF_ds = derivative(lambda s_: net(z, one, s_, y), (s,), (torch.ones_like(s),))
        v_landing = teacher_velocity(targets.flow_map_step(z, F.detach(), one, s), s, y)
        sq_pred = losses.squared_error(F, targets.freeflow_prediction_target(v_landing, dF_ds, one, s).detach(), losses.Reduce.SUM)
        loss_pred = losses.adaptively_weighted(sq_pred, args.p, args.c).mean()
        logs = {"mse_pred": sq_pred.mean().item()}
        loss = loss_pred
        if fake is not None:
            zero = torch.zeros(n)
            F1 = net(z, one, zero, y)
            x_hat = targets.flow_map_step(z, F1, one, zero).detach()
            r, r_aux = r_dist.sample(n), r_dist.sample(n)
            z_r, _ = sample_path(path, x_hat, torch.randn_like(x_hat), r)
            with torch.no_grad():
                v_fake = fake(z_r, r, r, y)
            corr_target = targets.freeflow_correction_target(F1, v_fake, teacher_velocity(z_r, r, y)).detach()
            loss_corr = 0.5 * losses.squared_error(F1, corr_target, losses.Reduce.SUM).mean()
            z_aux, v_aux = sample_path(path, x_hat, torch.randn_like(x_hat), r_aux)
            loss_aux = losses.squared_error(fake(z_aux, r_aux, r_aux, y), targets.flow_matching_target(v_aux), losses.Reduce.MEAN).mean()
            loss = loss + args.correction_weight * loss_corr + loss_aux
            logs.update(loss_corr=loss_corr.item(), loss_aux=loss_aux.item())
        return loss, {"loss": loss.item(), **logs}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "freeflow", extra_modules={} if fake is None else {"fake_velocity": fake})
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = run.ema.averaged(args.ema).eval()

    def field(y: torch.Tensor | None) -> sampling.VelocityField:
        return lambda z, t: teacher_velocity(z, t, y)

    generators = {
        "1nfe": lambda eps, y: sampling.flow_map_sample(lambda z, t, s: student(z, t, s, y), eps, uniform_grid(1)),
        f"teacher_heun{args.teacher_steps}": lambda eps, y: sampling.heun(field(y), eps, uniform_grid(args.teacher_steps)),
    }
    results, samples = experiment.evaluate(source, generators, n=args.eval_samples, seed=args.seed)
    key = "fd" if source.name == experiment.DIGITS else "sw2"
    ratio = results["1nfe"].get(key, float("nan")) / results[f"teacher_heun{args.teacher_steps}"].get(key, float("nan"))
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "freeflow", "train_seconds": train_seconds, "steps": args.steps, "derivative": args.derivative.value,
                              "correction": not args.no_correction, "cfg": w, f"{key}_ratio_1nfe_vs_teacher": ratio})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
