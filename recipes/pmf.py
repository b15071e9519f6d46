"""Pixel MeanFlow (Lu et al. 2026, arXiv 2601.22158) on 8x8 digits: one-step generation in pixel space.

The network predicts images for two heads on one trunk, x_u and x_v, turned into velocities inside
the differentiated function (so the JVP sees the 1/t):

    u = (z_t - x_u(z, t, s, y, omega)) / clip(t, 0.05, 1),   v = (z_t - x_v(...)) / clip(t, 0.05, 1)

and trained with improved MeanFlow's compound v-loss (Geng et al. 2025b, iMF):

    v_g = v_t + (1 - 1/omega)(v_c - v_u)             v_c, v_u: the model's own v-head, (y, omega) and (null, 1)
    (u, v), du/dt = JVP of (z, t) -> (u, v) along (v_c, 1), s fixed
    L = w(V) ||V - sg v_g||^2 + w(v) ||v - sg v_g||^2,  V = u + (t - s) sg(du/dt),  w = 1 / (sg(L) + c)^p

with t, s ~ logit-normal(0, 0.8) (10% of draws uniform), s = t on half the rows (set before sorting), the guidance scale
omega ~ log-uniform[1, omega_max] given to the network as 1 - 1/omega, and 10% label dropout
(omega = 1 on those rows). Sampling: x = z_1 - u(z_1, 1, 0) at 1 NFE; 2 and 4 NFE on a uniform grid.

Two defaults differ from the paper's ImageNet setting, each measured on digits (README, pmf rows):
p = 0, the plain squared error, where iMF's adaptive weight has p = 1 (1-NFE FD 1.06 vs 1.40: with
p = 1 the loss is log(L + c), whose minimiser is a mode-seeking location of the noisy target rather
than its mean, see flowcore.losses); and sampling at omega = 1, as guidance raised FD at every scale
tried (both measured at 7000 steps: README rows pmf_7k, pmf_adaptive, pmf_w*). --p 1 --omega 1.5 restores the paper's
choices. The default trains 5000 steps with du/dt a forward difference (--derivative fd: du/dt is detached, so no
gradient goes through it) and a fused Adam step: 67.5 ms per step on 2 threads, 5.7 min projected, against 103.5 ms
and 8.7 min with the JVP (bench/default_wall_time.py). Its 1-NFE FD is 1.12 on the evaluation's noise draw and 1.16
as the mean of 5 draws (scripts/fd_draws.py); with the JVP at the same 5000 steps 1.18 and 1.25 (run pmf_jvp), and
with fd for 7000 steps 1.16 and 1.31 (run pmf_fd_7k): more steps did not help.

--prediction v (or eps) keeps everything else and makes the heads output velocities (or noise), the
ablation behind pMF's choice of x-prediction (README claims: with the JVP and 5000 steps, 1-NFE FD 1.18 for x, 1.40
for v, run pmf_v, and 42.5 for eps, run pmf_eps, whose v = (eps - z)/clip(1 - t) divides by 0.05 at t = 1).

    python recipes/pmf.py                  # the main job: digits, 1-NFE samples in runs/pmf/
    python recipes/pmf.py --derivative jvp   # the exact JVP (torch.func), the earlier default
"""

from __future__ import annotations

import argparse

import torch

from flowcore import experiment, guidance, losses, sampling, targets, train
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, sample_path
from flowcore.times import logit_normal_with_uniform, sample_pairs, uniform_grid


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=5000, batch=128, lr=1e-3, depth=4, out="runs/pmf")
    p.set_defaults(lr_decay=0.3)  # lr falling linearly to 0 over the last 30% (with p = 1 and omega 1.5, 1-NFE FD 1.88 -> 1.76)
    p.add_argument("--derivative", type=Derivative, choices=list(Derivative), default=Derivative.FD,
                   help="du/dt back end; fd, a forward difference, is safe as du/dt is detached (default: %(default)s)")
    p.add_argument("--equal-fraction", type=float, default=0.5, help="fraction of rows with s = t (default: %(default)s)")
    p.add_argument("--uniform-fraction", type=float, default=0.1, help="fraction of times drawn uniformly instead of logit-normal (default: %(default)s)")
    p.add_argument("--prediction", type=targets.Prediction, choices=list(targets.Prediction), default=targets.Prediction.X,
                   help="what the two heads output: x (pMF), or eps / v, the ablation of that choice (default: %(default)s)")
    p.add_argument("--t-floor", type=float, default=0.05, help="clip of t in u = (z - x)/t, of 1 - t for eps (default: %(default)s)")
    p.add_argument("--omega-max", type=float, default=4.0, help="largest training guidance scale (default: %(default)s)")
    p.add_argument("--omega", type=float, default=1.0, help="guidance scale for sampling; 1 = unguided, the best 1-NFE FD of the README's pmf_w sweeps (default: %(default)s)")
    p.add_argument("--label-drop", type=float, default=0.1, help="label dropout (default: %(default)s)")
    p.add_argument("--p", type=float, default=0.0, help="adaptive-weight power, w = 1/(sg(L) + c)^p; 0 = plain squared error, iMF uses 1 (default: %(default)s)")
    p.add_argument("--c", type=float, default=1e-2, help="adaptive-weight constant, on a sum over pixels (default: %(default)s)")
    experiment.add_aux_head_depth_arg(p)
    return experiment.finalize_args(p.parse_args(argv))


def model_options(args: argparse.Namespace) -> dict:
    """The network beyond the common flags: the guidance-scale input and the v-head (with --aux-head-depth blocks of its own)."""
    return {"n_scalar_conds": 1, "aux_head": True, "aux_head_depth": args.aux_head_depth}


def generators(student: torch.nn.Module, args: argparse.Namespace, source: experiment.Source) -> dict[str, experiment.Generator]:
    """1/2/4-NFE flow-map samplers of the u-head (u = (z - x_u)/clip(t) under x-prediction) at guidance scale --omega
    (also used by scripts/fd_draws.py)."""
    prediction = targets.Prediction(args.prediction)

    def flow_map(y: torch.Tensor) -> sampling.FlowMap:
        def u(z: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            c = guidance.guidance_feature(torch.full((y.shape[0],), float(args.omega), dtype=z.dtype))[:, None]
            return targets.velocity_from_prediction(prediction, z, student(z, t, s, y, c)[0], t, args.t_floor)
        return u

    return {f"{k}nfe": (lambda eps, y, k=k: sampling.flow_map_sample(flow_map(y), eps, uniform_grid(k))) for k in (1, 2, 4)}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.data != experiment.DIGITS:
        raise SystemExit("pixel MeanFlow is a class-conditional image recipe: use --data digits")
    run = experiment.setup(args, **model_options(args))
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr, betas=(0.9, 0.95), fused=True)
    t_dist = logit_normal_with_uniform(0.0, 0.8, args.uniform_fraction)
    path, derivative = LinearPath(), DirectionalDerivative(args.derivative)

    def velocities(z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, y: torch.Tensor, omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v) from the two heads (x-prediction unless --prediction says otherwise)."""
        out_u, out_v = net(z, t, s, y, guidance.guidance_feature(omega)[:, None])
        return (targets.velocity_from_prediction(args.prediction, z, out_u, t, args.t_floor),
                targets.velocity_from_prediction(args.prediction, z, out_v, t, args.t_floor))

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = source.batch(args.batch // dist.world_size)
        n = x.shape[0]
        t, s = sample_pairs(n, t_dist, equal_fraction=args.equal_fraction, equal_before_sort=True)
        z, v_path = sample_path(path, x, torch.randn_like(x), t)
        v_t = targets.velocity_from_x_prediction(z, x, t, args.t_floor) if args.prediction is targets.Prediction.X else v_path
        y, dropped = guidance.drop_labels(y, args.label_drop, source.null_class)
        omega = torch.where(dropped, torch.ones(n), guidance.sample_guidance_scale(n, args.omega_max))
        with torch.no_grad():
            _, v_both = velocities(torch.cat([z, z]), torch.cat([t, t]), torch.cat([t, t]),
                                   torch.cat([y, torch.full_like(y, source.null_class)]), torch.cat([omega, torch.ones(n)]))
        v_c, v_u = v_both.chunk(2)
        v_g = guidance.imf_guided_velocity(v_t, v_c, v_u, omega).detach()
        (u, v), (du_dt, _) = derivative(lambda z_, t_: velocities(z_, t_, s, y, omega), (z, t), (v_c, torch.ones_like(t)))
        per_sample, loss_u, loss_v = losses.improved_meanflow_loss(targets.compound_velocity(u, du_dt, t, s), v, v_g, args.c, args.p)
        loss = per_sample.mean()
        return loss, {"loss": loss.item(), "mse_u": loss_u.mean().item(), "mse_v": loss_v.mean().item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "pmf", eval_flags=("omega",))
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()
    results, samples = experiment.evaluate(source, generators(student, args, source), n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "pmf", "train_seconds": train_seconds, "steps": args.steps, "derivative": args.derivative.value, "omega": args.omega})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
