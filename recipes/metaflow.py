"""Meta Flow Maps (Potaptchik, Saravanan, Mammadov, Prat, Albergo, Teh 2026, arXiv 2601.14430): a
stochastic flow map that samples the posterior p(x | z_c) of the data given a noisy state z_c.

One network F(z, t, s | c, z_c) is a flow map of the flow from noise to p(x | z_c) (an inner flow with
its own times t >= s); its extra noise input is the inner starting point z ~ N(0, I) at t = 1, so
x = z - F(z, 1, 0 | c, z_c) is one posterior draw, and c = 1 (z_c pure noise) is plain 1-step
generation. Conditioning state z_c = (1 - c) x + c n with c ~ 1 - U^2, and c = 1 on 10% (the official
t_cond sampler in flowcore's time); the inner path z_t = (1 - t) x + t eps uses the same x.

    diagonal:     F(z_t, t, t | c, z_c)  vs  v,            t ~ U(0, 1]
    consistency, (t, s) sorted U^2, f = z_t + (s - t) F(z_t, t, s | c, z_c) where the map lands:
      lagrangian (default; the official lsd):  F  vs  sg(v(f, s) - (s - t) dF/ds),  dF/ds by JVP in s alone,
                   i.e. the map's velocity in its terminal time, df/ds = F + (s - t) dF/ds, matches v where it lands
      eulerian (the official esd):             F  vs  sg(v(z_t, t) - (t - s) dF/dt),  dF/dt = J_F (v, 1, 0)
    each term:    sum_d (F - target)^2 adaptively weighted, p = 0.5 (diagonal), 1.0 (consistency), c = 0.01 (--p-diagonal, --p-consistency)
    v = the exact posterior velocity E[eps - x | z, z_c] from the mixture's velocity at the GLASS point
        (--diagonal-target teacher; the official distilled default), or eps - x on the diagonal and the network's
        own diagonal F(f, s, s) at the landing point (--diagonal-target data)

The consistency term starts after --warmup of the steps (diagonal only before, as officially). Data:
the 8-Gaussian ring, a Gaussian mixture with an exact posterior. Evaluation: unconditional 1/2/4-NFE
samples against the data (sliced W2, energy, floors), and posterior samples at fixed (c, z_c) against
exact posterior draws, beside the same distance between two exact draws (the floor), per c.

The network is flowcore's residual MLP; (c, z_c) enter its input layer beside z as well as its adaLN modulation
(--no-cond-input: modulation only). Measured, 1-step sliced W2 / its floor: unconditional; posterior at
c = 0.25 / 0.5 / 0.75, each posterior figure the mean over 10 conditioning states (--posterior-points; README metaflow rows):

    default (--consistency lagrangian)                        1.17;  1.64 / 1.20 / 1.08  (4 NFE: 1.18; 1.67 / 0.91 / 0.94)
    the default on seed 1 / seed 2                            1.02;  1.84 / 1.33 / 0.99   /   1.30;  2.01 / 1.69 / 0.97
    --precondition                                            1.60;  2.12 / 1.61 / 1.19  (4 NFE: 1.20; 1.63 / 0.93 / 0.95)
    --consistency eulerian (the earlier default)              1.60;  5.4 / 1.72 / 1.29   (4 NFE: 1.33; 4.9 / 1.44 / 0.94)

At c = 0.25 the posterior is one narrow mode or two (std about 0.1, neighbouring modes 2 sqrt(2) sin(pi/8) = 1.08 apart).
The Eulerian map's 1-step samples collapse into modes far narrower than the posterior's and trail along thin curves
between them; the Lagrangian map's modes have about the posterior's width, though some samples still lie between modes
(samples_posterior_c0.25_*.png of the two runs). Its worst 1-step figure falls from 5.4x to 1.64x (1.84x, 2.01x on
seeds 1 and 2). The Lagrangian target reads the exact posterior velocity where the map lands; the Eulerian one is built
at the start point from the map's own derivative along v. More steps do not help at c = 0.25 with the Lagrangian map
(2 / 4 NFE: 1.76 / 1.67; seeds 1 and 2: 2.18 / 2.21, 2.37 / 2.46). Its JVP is in the scalar s alone; a step costs 2.5x an FM
step (2.2x with --derivative fd; bench/recipe_step_cost.py).

Earlier comparisons, all with --consistency eulerian and 3 conditioning states per c (--posterior-points 3):

    default of the time (--cond-input)                        1.60;  5.2 / 1.63 / 1.47
    --no-cond-input                                           2.48;  3.0 / 2.56 / 2.43
    --cond-input, p = 0 in both terms, lr decay 0.3          1.85;  3.7 / 1.98 / 1.42
    --cond-input --power 1                                    2.93;  3.4 / 2.29 / 2.15
    --prediction x (F = (z - x)/clip(t), as pMF)              1.95;  3.8 / 2.6 / 1.61
    --prediction x --power 1                                  2.33;  3.3 / 2.3 / 1.70
    --query-input                                             6.8;   3.8 / 3.9 / 4.7    (4 NFE: 1.19; 1.38 / 1.21 / 1.03)
    --query-input --prediction x                              3.4;   4.4 / 3.5 / 4.9    (4 NFE: 1.21; 2.9 / 1.57 / 1.33)
    --steps 8000                                              1.63;  6.6 / 2.14 / 1.33
    --query-input --p-diagonal 0 --p-consistency 0            2.87;  4.8 / 3.0 / 3.2     (4 NFE: 1.77; 4.6 / 2.26 / 2.21)
    --query-input --power 1                                   6.5;   4.0 / 3.75 / 4.8   (4 NFE: 1.19; 1.52 / 1.28 / 1.03)
    --precondition                                            1.92;  3.9 / 2.95 / 2.55  (4 NFE: 1.30; 2.2 / 1.41 / 1.52)
    --precondition --lr-decay 0.3                             1.95;  3.75 / 2.77 / 2.55 (4 NFE: 1.23; 2.15 / 1.33 / 1.17)

and over 10 states (a finished run re-evaluates with --resume --posterior-points 10):

    default of the time                                       1.60;  5.4 / 1.72 / 1.29  (4 NFE: 1.33; 4.9 / 1.44 / 0.94)
    --precondition                                            1.92;  3.6 / 2.11 / 1.98  (4 NFE: 1.30; 2.1 / 1.06 / 1.27)
    --precondition --lr-decay 0.3                             1.95;  3.7 / 2.04 / 2.02  (4 NFE: 1.23; 2.1 / 1.00 / 0.96)
    --precondition --power 1                                  1.87;  3.7 / 2.23 / 1.91  (4 NFE: 1.27; 2.0 / 1.24 / 1.04)
    --precondition --query-input                              3.26;  5.0 / 3.13 / 3.61  (4 NFE: 1.36; 3.4 / 1.23 / 1.16)
    --precondition --steps 10000 (over the 10-minute budget)  1.32;  4.0 / 1.80 / 1.52  (4 NFE: 1.17; 2.0 / 0.94 / 1.03)

--precondition reads the output as x_hat = c_skip(t*) z* + c_out(t*) G: the residual of x from its posterior mean under
a Gaussian prior of the data's RMS, in units of that prior's posterior spread (EDM's scalings at the query point,
targets.preconditioned_posterior_flow_map). --query-input also gives the network (t*, z*) = posterior_query_point(z, t,
z_c, c), the single noisy state with p(x | z_t, z_c) = p(x | z*_t*).

    python recipes/metaflow.py
    python recipes/metaflow.py --diagonal-target data --derivative fd
"""

from __future__ import annotations

import argparse
import enum

import torch

from flowcore import data, experiment, losses, metrics, sampling, targets, train
from flowcore.derivatives import Derivative, DirectionalDerivative
from flowcore.interpolants import LinearPath, sample_path
from flowcore.times import Uniform, sample_condition_times, sample_pairs, uniform_grid

MIXTURES = {data.Toy2D.EIGHT_GAUSSIANS.value: data.ring_mixture}
POSTERIOR_TIMES = (0.25, 0.5, 0.75)
LANDING_FLOOR = 1e-3
"""Smallest landing time of the Lagrangian term: the posterior velocity (f - x_hat)/s is read at s >= this."""


class Consistency(enum.Enum):
    """Which flow-map identity the off-diagonal term enforces (the official code's esd / lsd)."""
    EULERIAN = "eulerian"
    LAGRANGIAN = "lagrangian"

    def __str__(self) -> str:
        return self.value


class DiagonalTarget(enum.Enum):
    TEACHER = "teacher"
    DATA = "data"

    def __str__(self) -> str:
        return self.value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="eight_gaussians", steps=5000, batch=256, lr=1e-3, depth=4, out="runs/metaflow")
    p.add_argument("--derivative", type=Derivative, choices=list(Derivative), default=Derivative.JVP, help="dF/dt back end (default: %(default)s)")
    p.add_argument("--diagonal-target", type=DiagonalTarget, choices=list(DiagonalTarget), default=DiagonalTarget.TEACHER,
                   help="velocity regressed: exact posterior velocity or eps - x (default: %(default)s)")
    p.add_argument("--consistency", type=Consistency, choices=list(Consistency), default=Consistency.LAGRANGIAN,
                   help="eulerian: F vs sg(v - (t - s) dF/dt) at the start (esd); lagrangian: df/ds vs sg v(f, s) where the map lands "
                        "(lsd), v the exact posterior velocity, or the network's own diagonal under --diagonal-target data (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps with the diagonal loss only (default: %(default)s)")
    p.add_argument("--noise-rate", type=float, default=0.1, help="fraction of pure-noise conditions c = 1 (default: %(default)s)")
    p.add_argument("--power", type=float, default=2.0, help="c = 1 - U^power (default: %(default)s)")
    p.add_argument("--cond-input", action=argparse.BooleanOptionalAction, default=True,
                   help="also feed (c, z_c) to the MLP's input layer beside z, not only to its adaLN modulation (default: %(default)s)")
    p.add_argument("--query-input", action=argparse.BooleanOptionalAction, default=False,
                   help="also give the network the posterior query point (z*, t*) of (z, t, c, z_c), p(x | z_t, z_c) = p(x | z*_t*) (default: %(default)s)")
    p.add_argument("--precondition", action=argparse.BooleanOptionalAction, default=False,
                   help="read the output G as x_hat = c_skip(t*) z* + c_out(t*) G at the posterior query point (z*, t*), with the "
                        "Gaussian-prior scalings of sigma_d = the data's RMS, and F = (z - x_hat)/t (default: %(default)s)")
    p.add_argument("--p-diagonal", type=float, default=0.5, help="adaptive-weight power of the diagonal term, 0 = plain squared error (default: %(default)s)")
    p.add_argument("--p-consistency", type=float, default=1.0, help="adaptive-weight power of the consistency term (default: %(default)s)")
    p.add_argument("--c", type=float, default=1e-2, help="adaptive-weight constant, on a sum over dims (default: %(default)s)")
    p.add_argument("--prediction", type=targets.Prediction, choices=list(targets.Prediction), default=targets.Prediction.V,
                   help="what the network outputs: F itself (v), or x with F = (z - x)/clip(t) (x), or eps (default: %(default)s)")
    p.add_argument("--t-floor", type=float, default=0.05, help="clip of t in F = (z - x)/t, of 1 - t for eps (default: %(default)s)")
    p.add_argument("--posterior-samples", type=int, default=None, help="samples per conditioning state in the evaluation (default: 2000; 64 with --smoke)")
    p.add_argument("--posterior-points", type=int, default=None, help="conditioning states per c in the evaluation (default: 10; 1 with --smoke)")
    args = experiment.finalize_args(p.parse_args(argv))
    if args.posterior_samples is None:
        args.posterior_samples = 64 if args.smoke else 2000
    if args.posterior_points is None:
        args.posterior_points = 1 if args.smoke else 10
    if args.posterior_samples < 2 or args.posterior_points < 1:
        raise SystemExit(f"--posterior-samples must be >= 2 and --posterior-points >= 1, got {args.posterior_samples}, {args.posterior_points}")
    if args.data not in MIXTURES:
        raise SystemExit(f"Meta Flow Maps needs a Gaussian mixture with an exact posterior: use --data {' or '.join(MIXTURES)}")
    if (args.query_input or args.precondition) and args.derivative is Derivative.FD and args.consistency is Consistency.EULERIAN:
        raise SystemExit("--query-input and --precondition with --consistency eulerian need --derivative jvp or fused: the forward "
                         "difference steps t past 1, outside posterior_query_point's (0, 1]")
    if args.precondition and args.prediction is not targets.Prediction.V:
        raise SystemExit(f"--precondition sets the output's meaning itself (a scaled residual of x): drop --prediction {args.prediction}")
    if not 0 <= args.warmup < 1:
        raise SystemExit(f"--warmup must be in [0, 1), got {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    mixture = MIXTURES[args.data]()
    n_conds = (2 if args.query_input else 1) * (1 + mixture.dim)
    run = experiment.setup(args, n_scalar_conds=n_conds, conds_in_input=args.cond_input)
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr)
    path, derivative, warmup_steps = LinearPath(), DirectionalDerivative(args.derivative), int(args.warmup * args.steps)
    sigma_data = mixture.root_mean_square()

    def flow_map(model: torch.nn.Module, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """F(z, t, s | c, z_c) from the network's output under --prediction; ``cond`` = (c, z_c), to which
        --query-input appends (t*, z*) = posterior_query_point(z, t, z_c, c) (differentiable in z and t);
        --precondition reads the output as a residual of x (``targets.preconditioned_posterior_flow_map``)."""
        if args.query_input or args.precondition:
            z_star, t_star = targets.posterior_query_point(z, t, cond[:, 1:], cond[:, 0])
        if args.query_input:
            cond = torch.cat([cond, t_star[:, None], z_star], dim=1)
        out = model(z, t, s, None, cond)
        if args.precondition:
            return targets.preconditioned_posterior_flow_map(z, t, z_star, t_star, out, sigma_data)
        return targets.velocity_from_prediction(args.prediction, z, out, t, args.t_floor)

    def exact_posterior_velocity(z: torch.Tensor, t: torch.Tensor, z_c: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """E[eps - x | z_t = z, z_c]: the mixture's velocity at the GLASS query point (the teacher)."""
        z_star, t_star = targets.posterior_query_point(z, t, z_c, c)
        return targets.posterior_velocity(z, t, z_star, t_star, mixture.velocity(z_star, t_star))

    def velocity(z: torch.Tensor, t: torch.Tensor, v: torch.Tensor, z_c: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return v if args.diagonal_target is DiagonalTarget.DATA else exact_posterior_velocity(z, t, z_c, c)

    @torch.no_grad()
    def landing_velocity(f: torch.Tensor, s: torch.Tensor, z_c: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """v(f, s) where the map lands: the exact posterior velocity, or the network's own diagonal F(f, s, s) (data)."""
        if args.diagonal_target is DiagonalTarget.DATA:
            return flow_map(net, f, s, s, torch.cat([c[:, None], z_c], dim=1))
        return exact_posterior_velocity(f, s, z_c, c)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, _ = source.batch(args.batch // dist.world_size)
        n = x.shape[0]
        c = sample_condition_times(n, args.noise_rate, args.power)
        z_c, _ = sample_path(path, x, torch.randn_like(x), c)
        cond = torch.cat([c[:, None], z_c], dim=1)
        t_fm = 1.0 - Uniform().sample(n)  # (0, 1]
        z_fm, v_fm = sample_path(path, x, torch.randn_like(x), t_fm)
        sq_fm = losses.squared_error(flow_map(net, z_fm, t_fm, t_fm, cond), velocity(z_fm, t_fm, v_fm, z_c, c).detach(), losses.Reduce.SUM)
        loss = losses.adaptively_weighted(sq_fm, args.p_diagonal, args.c).mean()
        logs = {"mse_diagonal": sq_fm.mean().item()}
        if step >= warmup_steps:
            t, s = sample_pairs(n, Uniform())
            t = t.clamp(min=1e-4)
            z, v = sample_path(path, x, torch.randn_like(x), t)
            if args.consistency is Consistency.EULERIAN:
                v = velocity(z, t, v, z_c, c).detach()
                F, dF_dt = derivative(lambda z_, t_: flow_map(net, z_, t_, s, cond), (z, t), (v, torch.ones_like(t)))
                target = targets.meanflow_target(v, t, s, dF_dt)
            else:
                s = torch.minimum(s.clamp(min=LANDING_FLOOR), t)
                F, dF_ds = derivative(lambda s_: flow_map(net, z, t, s_, cond), (s,), (torch.ones_like(s),))
                target = targets.freeflow_prediction_target(landing_velocity(targets.flow_map_step(z, F, t, s).detach(), s, z_c, c), dF_ds, t, s)
            sq = losses.squared_error(F, target.detach(), losses.Reduce.SUM)
            loss = loss + losses.adaptively_weighted(sq, args.p_consistency, args.c).mean()
            logs["mse_consistency"] = sq.mean().item()
        return loss, {"loss": loss.item(), **logs}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "metaflow",
                                                       eval_flags=("posterior_samples", "posterior_points"))
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()

    def sample(eps: torch.Tensor, cond: torch.Tensor, k: int) -> torch.Tensor:
        return sampling.flow_map_sample(lambda z, t, s: flow_map(student, z, t, s, cond), eps, uniform_grid(k))

    g = torch.Generator().manual_seed(args.seed + 1)

    def unconditional(eps: torch.Tensor, k: int) -> torch.Tensor:
        n = eps.shape[0]
        return sample(eps, torch.cat([torch.ones(n, 1), torch.randn(n, mixture.dim, generator=g)], dim=1), k)

    results, samples = experiment.evaluate(source, {f"{k}nfe": (lambda eps, y, k=k: unconditional(eps, k)) for k in (1, 2, 4)},
                                           n=args.eval_samples, seed=args.seed)
    posterior, m = {}, args.posterior_samples
    for c_value in POSTERIOR_TIMES:
        c = torch.tensor(c_value, dtype=torch.float64)
        x_ref = mixture.sample(args.posterior_points, g)[0]
        points = ((1 - c) * x_ref + c * torch.randn(x_ref.shape, generator=g, dtype=torch.float64)).float()
        for k in (1, 2, 4):
            rows = []
            for i, z_c in enumerate(points):
                cond = torch.cat([torch.full((m, 1), c_value), z_c.expand(m, -1)], dim=1)
                x = sample(torch.randn(m, mixture.dim, generator=g), cond, k)
                sw2 = metrics.posterior_distance(metrics.sliced_w2, x, mixture, z_c, c, seed=args.seed + i)
                energy = metrics.posterior_distance(metrics.energy_distance, x, mixture, z_c, c, seed=args.seed + i)
                rows.append([sw2.value, sw2.floor, energy.value, energy.floor])
                if k == 1:
                    samples[f"posterior_c{c_value:.2f}_{i}"] = x
            mean = torch.tensor(rows).mean(0).tolist()
            posterior[f"posterior_c{c_value:.2f}_{k}nfe"] = {"sw2": mean[0], "sw2_floor": mean[1], "energy": mean[2], "energy_floor": mean[3]}
    results.update(posterior)
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "metaflow", "train_seconds": train_seconds, "steps": args.steps, "derivative": args.derivative.value,
                              "diagonal_target": args.diagonal_target.value, "consistency": args.consistency.value, "prediction": args.prediction.value, "query_input": args.query_input, "posterior_times": list(POSTERIOR_TIMES),
                              "posterior_points": args.posterior_points, "posterior_samples": m})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
