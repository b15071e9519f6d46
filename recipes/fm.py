"""Flow matching (Lipman et al. 2023; rectified flow, Liu et al. 2023): the teacher of the later recipes.

    z_t = (1 - t) x + t eps,  L = E ||v_theta(z_t, t) - (eps - x)||^2,  t ~ logit-normal(0, 1)

Class-conditional on digits with 10% label dropout; sampled by 50-step Euler and Heun (with CFG on
digits) from t = 1 to 0; 1/2/4-step Euler shows the blur a flow map removes. The checkpoint in
--out is what distillation recipes load.

    python recipes/fm.py                      # digits (default)
    python recipes/fm.py --data checkerboard  # 2D
"""

from __future__ import annotations

import argparse

import torch

from flowcore import experiment, guidance, losses, sampling, targets, train
from flowcore.interpolants import LinearPath, sample_path
from flowcore.times import LogitNormal, uniform_grid


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=6000, batch=128, lr=1e-3, depth=4, out="runs/fm")
    p.add_argument("--label-drop", type=float, default=0.1, help="CFG label dropout (default: %(default)s)")
    p.add_argument("--cfg", type=float, default=1.5, help="sampling CFG scale on digits (default: %(default)s)")
    p.add_argument("--ode-steps", type=int, default=None, help="teacher sampling steps (default: 50 digits, 100 2D)")
    return experiment.finalize_args(p.parse_args(argv))


def generators(teacher: torch.nn.Module, args: argparse.Namespace, source: experiment.Source) -> dict[str, experiment.Generator]:
    """Euler 1/2/4/n and Heun n of the (CFG-guided on digits) velocity, n = --ode-steps (also used by scripts/fd_draws.py)."""
    n_ode = ode_steps(args, source)
    w = args.cfg if source.conditional else 1.0

    def field(y: torch.Tensor | None) -> sampling.VelocityField:
        if y is None:
            return lambda z, t: teacher(z, t, t)
        return sampling.velocity_of(guidance.guided(teacher, y, w, source.null_class))

    out = {f"euler{n}": (lambda eps, y, n=n: sampling.euler(field(y), eps, uniform_grid(n))) for n in (1, 2, 4, n_ode)}
    out[f"heun{n_ode}"] = lambda eps, y: sampling.heun(field(y), eps, uniform_grid(n_ode))
    return out


def ode_steps(args: argparse.Namespace, source: experiment.Source) -> int:
    """--ode-steps, else 50 on digits and 100 on 2D."""
    return args.ode_steps or (50 if source.conditional else 100)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    run = experiment.setup(args)
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr)
    path, t_dist = LinearPath(), LogitNormal(0.0, 1.0)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = source.batch(args.batch // dist.world_size)
        if y is not None:
            y, _ = guidance.drop_labels(y, args.label_drop, source.null_class)
        t = t_dist.sample(x.shape[0])
        z, v = sample_path(path, x, torch.randn_like(x), t)
        loss = losses.squared_error(net(z, t, t, y), targets.flow_matching_target(v), losses.Reduce.MEAN).mean()
        return loss, {"loss": loss.item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "fm")
    if not dist.is_main:
        train.close_distributed()
        return {}
    teacher = ema.averaged(args.ema).eval()
    n_ode, w = ode_steps(args, source), args.cfg if source.conditional else 1.0
    results, samples = experiment.evaluate(source, generators(teacher, args, source), n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history, {"recipe": "fm", "train_seconds": train_seconds, "steps": args.steps, "teacher_steps": n_ode, "cfg": w})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
