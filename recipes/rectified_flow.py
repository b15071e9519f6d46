"""Rectified flow with reflow and one-step distillation (Liu, Gong & Liu 2022, arXiv 2209.03003).

Round 0 is the flow-matching teacher (recipes/fm.py, loaded or trained and cached). Round k >= 1
("k-rectified flow") draws pairs from the previous round's ODE and keeps the coupling:

    eps ~ N(0, I),  x = ODE_{1 -> 0}(eps)  (Heun, --pair-steps, CFG on digits: the guided coupling)
    z_t = (1 - t) x + t eps,  L = E ||v_k(z_t, t) - (eps - x)||^2,  t ~ U[0, 1]

starting from the previous round's weights. Then the last round is distilled into one step on
pairs from its own ODE: L = E ||F(eps, 1, 0) - (eps - x)||^2 (the same network, asked for the
jump t = 1 -> s = 0). Per round metrics.json holds the straightness
S = int E||(z_1 - z_0) - v(z_t, t)||^2 dt, the 1/2/4-step Euler error against the round's own ODE
solution (mean squared error per dimension) and the sample quality at 1/2/4 Euler steps and at the
ODE; the claim is that reflow straightens the flow, so few-step error falls round by round.
Every round and the one-step model reuse the teacher's network (its model, width and depth; the
--model/--width/--depth flags do not apply), initialised from the previous round's EMA weights.

    python recipes/rectified_flow.py                       # digits, 1 reflow round + distillation
    python recipes/rectified_flow.py --data checkerboard --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from torch import nn

from flowcore import experiment, guidance, losses, metrics, sampling, targets, train
from flowcore.interpolants import LinearPath, sample_path
from flowcore.times import Uniform, uniform_grid
from flowcore.train.loop import RESUME_MAY_DIFFER

FEW_STEPS = (1, 2, 4)
ERROR_SAMPLES = 512


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=3000, batch=128, lr=3e-4, depth=4, out="runs/rectified_flow")
    p.add_argument("--teacher", type=Path, default=None, help="FM teacher checkpoint (default: the fm recipe's default run, trained if missing)")
    p.add_argument("--rounds", type=int, default=1, help="reflow rounds after the teacher; --steps each (default: %(default)s)")
    p.add_argument("--distill-steps", type=int, default=3000, help="one-step distillation steps, 0 to skip (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=8192, help="(noise, sample) pairs generated per round (default: %(default)s)")
    p.add_argument("--pair-steps", type=int, default=16, help="Heun steps of the pair-generating ODE (default: %(default)s)")
    p.add_argument("--cfg", type=float, default=1.5, help="teacher CFG scale for the digits pairs (default: %(default)s)")
    args = experiment.finalize_args(p.parse_args(argv))
    if args.smoke:
        args.distill_steps, args.pairs, args.pair_steps = min(args.distill_steps, 6), 256, 4
    if args.rounds < 0 or args.distill_steps < 0 or args.pairs < 1 or args.pair_steps < 1:
        raise SystemExit("--rounds and --distill-steps must be >= 0, --pairs and --pair-steps >= 1")
    return args


def train_phase(args: argparse.Namespace, dist: train.Dist, model: nn.Module, name: str, out: Path, steps: int, loss_of, resume: bool) -> tuple[nn.Module, list[float]]:
    """Train ``model`` for ``steps`` steps, checkpoint in ``out``; return its EMA (evaluated) weights and losses."""
    net, ema = train.prepare_model(model, dist), train.EMA(model, (args.ema,))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    config = {**experiment.config_of(args), "phase": name}
    history = train.train_loop(loss_fn=lambda step: loss_of(net), model=model, optimizer=optimizer, steps=steps, out=out, config=config, dist=dist,
                     ema=ema, resume=resume, ckpt_every=args.ckpt_every, grad_clip=args.grad_clip or None,
                     lr_schedule=experiment.linear_decay_tail(steps, args.lr_decay),
                     desc=name, resume_may_differ=RESUME_MAY_DIFFER + ("distill_steps",))
    return ema.averaged(args.ema).eval().requires_grad_(False), history["loss"]


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    dist = train.init_distributed()
    train.seed_everything(args.seed, dist.rank)
    source = experiment.load_source(args.data)
    teacher = experiment.load_teacher(args.teacher, source, dist, smoke=args.smoke)
    null = source.null_class
    gen = torch.Generator().manual_seed(args.seed + 1)  # noise of the error and straightness metrics
    eps_err = torch.randn((ERROR_SAMPLES, *source.shape), generator=gen)
    y_err = torch.randint(source.num_classes, (ERROR_SAMPLES,), generator=gen) if source.conditional else None

    def field_of(model: nn.Module, y: torch.Tensor | None, w: float = 1.0) -> sampling.VelocityField:
        if y is None:
            return lambda z, t: model(z, t, t)
        return sampling.velocity_of(guidance.guided(model, y, w, null))

    def make_pairs(model: nn.Module, w: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Pairs from a fixed seed: the same on every rank and on resume."""
        gen = torch.Generator().manual_seed(seed)
        eps = torch.randn((args.pairs, *source.shape), generator=gen)
        y = torch.randint(source.num_classes, (args.pairs,), generator=gen) if source.conditional else None
        x, eps = sampling.reflow_pairs(field_of(model, y, w), eps, uniform_grid(args.pair_steps))
        return x, eps, y

    def draw(pairs: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x, eps, y = pairs
        idx = torch.randint(x.shape[0], (args.batch // dist.world_size,))
        return x[idx], eps[idx], None if y is None else y[idx]

    def reflow_loss(pairs: tuple):
        def loss_of(net: nn.Module):
            x, eps, y = draw(pairs)
            t = Uniform().sample(x.shape[0])
            z, v = sample_path(LinearPath(), x, eps, t)
            loss = losses.squared_error(net(z, t, t, y), targets.flow_matching_target(v), losses.Reduce.MEAN).mean()
            return loss, {"loss": loss.item()}
        return loss_of

    def distill_loss(pairs: tuple):
        def loss_of(net: nn.Module):
            x, eps, y = draw(pairs)
            one, zero = torch.ones(x.shape[0]), torch.zeros(x.shape[0])
            target = targets.trajectory_average_velocity(eps, x, one, zero)
            loss = losses.squared_error(net(eps, one, zero, y), target, losses.Reduce.MEAN).mean()
            return loss, {"loss": loss.item()}
        return loss_of

    # On --resume a phase whose checkpoint is complete is loaded (its pairs are not regenerated), the
    # first incomplete one continues, and later ones restart (they came from a different model).
    resume = args.resume
    phases = [(f"reflow{k}", args.out / f"reflow{k}", args.steps, reflow_loss) for k in range(1, args.rounds + 1)]
    phases += [("distill", args.out, args.distill_steps, distill_loss)] if args.distill_steps else []
    rounds, w, history = [teacher], args.cfg if source.conditional else 1.0, {"loss": []}
    start = time.perf_counter()  # train_seconds: pair generation and every phase, as one figure
    for i, (name, out, steps, loss_for) in enumerate(phases):
        ckpt = out / train.CHECKPOINT_NAME
        phase_resume = resume and ckpt.is_file()
        resume = phase_resume and train.checkpoint_info(ckpt).step >= steps
        pairs = None if resume else make_pairs(rounds[-1], w if len(rounds) == 1 else 1.0, args.seed + 2 + i)
        model = copy.deepcopy(rounds[-1]).train().requires_grad_(True)
        trained, history[name] = train_phase(args, dist, model, name, out, steps, loss_for(pairs), phase_resume)
        history["loss"] += history[name]
        if loss_for is reflow_loss:
            rounds.append(trained)
        else:
            distilled = trained
    train_seconds = round(time.perf_counter() - start, 1)
    if not dist.is_main:
        train.close_distributed()
        return {}

    generators, summary = {}, []
    for k, model in enumerate(rounds):
        wk = w if k == 0 else 1.0
        ode = lambda eps, y, m=model, wk=wk: sampling.heun(field_of(m, y, wk), eps, uniform_grid(args.pair_steps))
        reference = ode(eps_err, y_err)
        row = {"round": k, "straightness": metrics.straightness(field_of(model, y_err, wk), eps_err, args.pair_steps)}
        for n in FEW_STEPS:
            euler = lambda eps, y, m=model, wk=wk, n=n: sampling.euler(field_of(m, y, wk), eps, uniform_grid(n))
            generators[f"round{k}_euler{n}"] = euler
            row[f"error_euler{n}"] = (euler(eps_err, y_err) - reference).square().mean().item()
        generators[f"round{k}_heun{args.pair_steps}"] = ode
        summary.append(row)
    if args.distill_steps:
        one_step = lambda eps, y: sampling.flow_map_sample(lambda z, t, s: distilled(z, t, s, y), eps, uniform_grid(1))
        generators["distill_1nfe"] = one_step
        summary.append({"round": f"distill{len(rounds) - 1}", "error_1nfe": (one_step(eps_err, y_err) - reference).square().mean().item()})
    results, samples = experiment.evaluate(source, generators, n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history, {"recipe": "rectified_flow", "rounds": summary, "cfg": w, "train_seconds": train_seconds})
    train.print_table({str(r["round"]): {k: v for k, v in r.items() if k != "round"} for r in summary})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
