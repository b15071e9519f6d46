"""Terminal Velocity Matching (Zhou, Parger, Haque, Song 2025, arXiv 2511.19797): a flow map trained
from scratch so that its derivative in the terminal time s is the velocity where it lands.

With the scaled parameterisation F = w G(z_t, t, s, y, 1 - 1/w) (the CFG scale w is a network input):

    f(z_t, t, s) = z_t + (s - t) F,     df/ds = F + (s - t) dF/ds   (JVP in s only, gradient THROUGH it)
    L_TV = (1/w^2) mean_d (df/ds - sg w G_ema(f, s, s, y))^2          (G_ema: EMA target, decay 0.99)
    L_FM = (1/w^2) mean_d (w G(z_s', s', s', y) - sg[G_u + w (eps - x - G_u)])^2,  G_u = G_ema(z_s', s', s', null, w = 1)
    L = L_TV + L_FM   (L_TV zeroed where s = t)

(s, t): gap g ~ LN(-0.8, 1), s ~ LN(-0.4, 1) truncated to [0, 1 - g], t = s + g; s' ~ LN(-0.4, 1)
for the flow-matching anchor, same noise. w ~ U[cfg_min, cfg_max] per row; 10% label dropout (with
w = 1). --no-cfg-weight drops the 1/w^2 (the ablation: large-w rows then dominate). Sampling: flow-map
jumps z <- z + (s - t) w G(z, t, s, y, 1 - 1/w) on a uniform grid at w = --cfg, 1/2/4 NFE.

The default trains 3300 steps, cut from 5000 to fit the 10-minute budget (bench/default_wall_time.py: 169 ms per
step on 2 threads); the weighting ablation and the CFG-scale comparisons ran 5000 steps, beside tvm_5k.

    python recipes/tvm.py                                   # digits, random CFG in [1, 3]
    python recipes/tvm.py --steps 5000 --no-cfg-weight --out runs/tvm_no_cfg_weight   # vs --steps 5000 --out runs/tvm_5k
    python recipes/tvm.py --model dit --derivative fused     # the fused attention JVP, backward through it
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from flowcore import experiment, guidance, losses, sampling, targets, train
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, expand_time, sample_path
from flowcore.nn import composite_layer_norms
from flowcore.times import LogitNormal, sample_gap_pairs, uniform_grid


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=3300, batch=128, lr=1e-3, depth=4, out="runs/tvm")
    p.set_defaults(lr_decay=0.3)  # lr falling linearly to 0 over the last 30% (1-NFE FD 1.23 -> 1.195 at w = 1.5 on digits)
    p.add_argument("--derivative", type=Derivative, choices=list(Derivative), default=Derivative.JVP, help="dF/ds back end (default: %(default)s)")
    p.add_argument("--ema-target", type=float, default=0.99, help="decay of the EMA target network (default: %(default)s)")
    p.add_argument("--cfg-min", type=float, default=1.0, help="smallest training CFG scale (default: %(default)s)")
    p.add_argument("--cfg-max", type=float, default=3.0, help="largest training CFG scale (default: %(default)s)")
    p.add_argument("--cfg", type=float, default=1.25, help="CFG scale for sampling, the best 1-NFE FD of the README's tvm_cfg sweep over 1.0 / 1.25 / 1.5 / 2.0 (default: %(default)s)")
    p.add_argument("--no-cfg-weight", action="store_true", help="ablation: drop the 1/w^2 loss weight")
    p.add_argument("--label-drop", type=float, default=0.1, help="label dropout (default: %(default)s)")
    args = experiment.finalize_args(p.parse_args(argv))
    if not 1.0 <= args.cfg_min <= args.cfg_max or args.cfg < 1.0:
        raise SystemExit(f"need 1 <= --cfg-min <= --cfg-max and --cfg >= 1, got {args.cfg_min}, {args.cfg_max}, {args.cfg}")
    return args


def model_options(args: argparse.Namespace) -> dict:
    """The network beyond the common flags: the CFG-scale input."""
    return {"n_scalar_conds": 1}


def flow_map(model: torch.nn.Module, y: torch.Tensor, w: torch.Tensor) -> sampling.FlowMap:
    """The scaled parameterisation F = w G(z, t, s, y, 1 - 1/w)."""
    c = guidance.guidance_feature(w)[:, None]
    return lambda z, t, s: expand_time(w, z) * model(z, t, s, y, c)


def generators(student: torch.nn.Module, args: argparse.Namespace, source: experiment.Source) -> dict[str, experiment.Generator]:
    """1/2/4-NFE flow-map samplers at CFG scale --cfg (also used by scripts/fd_draws.py)."""
    def generate(eps: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
        return sampling.flow_map_sample(flow_map(student, y, torch.full((y.shape[0],), float(args.cfg))), eps, uniform_grid(k))

    return {f"{k}nfe": (lambda eps, y, k=k: generate(eps, y, k)) for k in (1, 2, 4)}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.data != experiment.DIGITS:
        raise SystemExit("this TVM recipe is class-conditional with CFG as an input: use --data digits")
    run = experiment.setup(args, **model_options(args))
    composite_layer_norms(run.model)  # exact gradients through the JVP (torch's fused layer_norm gets them wrong)
    run = dataclasses.replace(run, ema=train.EMA(run.model, (args.ema, args.ema_target)))
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    path, derivative, s_dist = LinearPath(), DirectionalDerivative(args.derivative), LogitNormal(-0.4, 1.0)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = source.batch(args.batch // dist.world_size)
        n = x.shape[0]
        t, s = sample_gap_pairs(n, s_dist=s_dist)
        s_fm = s_dist.sample(n)
        eps = torch.randn_like(x)
        z, _ = sample_path(path, x, eps, t)
        z_fm, v = sample_path(path, x, eps, s_fm)
        y, dropped = guidance.drop_labels(y, args.label_drop, source.null_class)
        w = torch.where(dropped, torch.ones(n), args.cfg_min + (args.cfg_max - args.cfg_min) * torch.rand(n))
        F_student = flow_map(net, y, w)
        F, dF_ds = derivative(lambda s_: F_student(z, t, s_), (s,), (torch.ones_like(s),), grad_through_tangent=True)
        with torch.no_grad():
            both = flow_map(ema.averaged(args.ema_target), torch.cat([y, torch.full_like(y, source.null_class)]), torch.cat([w, torch.ones(n)]))(
                torch.cat([targets.flow_map_step(z, F, t, s), z_fm]), torch.cat([s, s_fm]), torch.cat([s, s_fm]))
        v_landing, v_uncond = both.chunk(2)
        weight = torch.ones(n) if args.no_cfg_weight else losses.guidance_scale_weight(w)
        loss_tv = losses.squared_error(targets.terminal_velocity(F, dF_ds, t, s), v_landing, losses.Reduce.MEAN) * weight
        loss_tv = torch.where(torch.isclose(s, t), torch.zeros_like(loss_tv), loss_tv)
        v_target = guidance.cfg_combine(targets.flow_matching_target(v), v_uncond, w)
        loss_fm = losses.squared_error(F_student(z_fm, s_fm, s_fm), v_target, losses.Reduce.MEAN) * weight
        loss = (loss_tv + loss_fm).mean()
        return loss, {"loss": loss.item(), "loss_tv": loss_tv.mean().item(), "loss_fm": loss_fm.mean().item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "tvm", eval_flags=("cfg",))
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()
    results, samples = experiment.evaluate(source, generators(student, args, source), n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "tvm", "train_seconds": train_seconds, "steps": args.steps, "derivative": args.derivative.value,
                              "cfg": args.cfg, "cfg_weight": not args.no_cfg_weight})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
