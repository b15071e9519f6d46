"""Latent Forcing (Baade et al. 2026, arXiv 2602.11401): one pixel-space transformer denoises the
pixels AND a frozen encoder's latent of the same image, and is trained so that at sampling time the
latent is generated first (pixels held at pure noise) and the pixels second (latent held clean);
the latent is then thrown away. The encoder runs only in training.

On digits: pixels (1, 8, 8); latent = the frozen DigitsEncoder's (16, 4, 4) features
(flowcore.representations), or with --latent-channels k < 16 their projection on the top k principal
channel directions (latent_streams.PrincipalChannels), normalised per channel to the pixels' standard
deviation (latent_streams.LatentNormalizer), upsampled to the 8x8 grid and stacked as k more input
channels of a DiT with patch 2, so token i holds pixel patch i and latent cell i (the summed per-token
embeddings); the DiT predicts x for both streams (latent head = the cell mean of its k extra output channels).
Its two time inputs (TimeInputs.T_S) are (t_pix, t_lat): two time embeddings summed into the adaLN
conditioning with the class embedding, as the paper's c = t_emb_pix + t_emb_lat + y_emb.

    x_hat_i = net([z_pix, z_lat], t_pix, t_lat, y)_i,  v(x) = (z_i - x) / clip(t_i, t_eps, 1)   (i = pix, lat)
    L = mean_B [pixel step] ||v(x_hat_pix) - v(x_pix)||^2 + 0.333 mean_B [latent step] ||v(x_hat_lat) - v(x_lat)||^2

The paper puts data at t = 1; flowcore at t = 0 (t = 1 - t_paper; its velocity (x - z)/(1 - t) is
minus ours, so the v-loss is unchanged). Converted constants (times.latent_first_times):

    paper (data at 1)                               flowcore (this recipe)
    latent step w.p. 0.4: t_lat ~ LN(-1.2, 1.0)     t_lat ~ LogitNormal(+1.2, 1.0)
      with t_pix = 0 (pure noise)                     with t_pix = 1
    pixel step: t_pix ~ LN(-0.4, 0.8), 10% U[0,.5]  t_pix ~ LogitNormal(+0.4, 0.8), 10% U[0.5, 1]
      with t_lat ~ U[0.75, 1] (noised latent)         with t_lat ~ U[0, 0.25]
    t_eps = 0.05 on 1 - t                           clip(t, 0.05, 1)
    sampling: t_lat 0 -> 1 (t_pix = 0), then        sampling.cascaded_stream_grids: t_lat 1 -> 0 (t_pix = 1),
      t_pix 0 -> 1 (t_lat = 1), Heun, last Euler      then t_pix 1 -> 0 (t_lat = 0); sampling.stream_heun

--order joint: independent t_pix, t_lat on every row, both streams in the loss (times.independent_stream_times),
sampled with both times moving together (sampling.simultaneous_stream_grids). --order pixel-only: the same
DiT and pixel times without the latent channels (t_lat input fixed at 1): plain pixel flow matching
(x-prediction, v-loss) at equal steps. Sampling: 20 Heun steps (10 per stream for the two-stream orders;
the paper uses 50: on CPU, 50 steps with CFG on 899 samples cost as much as ~900 training steps) with
CFG 1.5 on both streams, and without CFG. A diagnostic for the two-stream orders samples the pixel phase alone on
the clean latents of the evaluation's own images ("pixels_given_data_latent"): it separates the latent stream's
quality from the pixel stream's.

    python recipes/latent_forcing.py                         # cascaded, the trained digits encoder
    python recipes/latent_forcing.py --order pixel-only --out runs/latent_forcing_pixel_only
    python scripts/latent_forcing_ablation.py                # the three orders at equal steps, one table
"""

from __future__ import annotations

import argparse
import enum

import torch

from flowcore import data, experiment, guidance, losses, representations, sampling, targets, train
from flowcore.interpolants import LinearPath, sample_path
from flowcore.latent_streams import LatentNormalizer, PrincipalChannels, latent_from_pixel_grid, latent_on_pixel_grid
from flowcore.nn import DiT, DiTConfig, TimeInputs
from flowcore.times import LATENT_FORCING_PIXEL_TIMES, StreamTimes, independent_stream_times, latent_first_times, uniform_grid


class Order(enum.Enum):
    """Which streams are trained, and in which order they are generated."""

    CASCADED = "cascaded"
    JOINT = "joint"
    PIXEL_ONLY = "pixel-only"

    def __str__(self) -> str:
        return self.value


class Encoder(enum.Enum):
    """The frozen latent encoder: the shipped self-supervised weights, or a random init (control)."""

    TRAINED = "trained"
    RANDOM = "random"

    def __str__(self) -> str:
        return self.value


class Solver(enum.Enum):
    HEUN = "heun"
    EULER = "euler"

    def __str__(self) -> str:
        return self.value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=2000, batch=128, lr=1e-3, depth=4, out="runs/latent_forcing")
    p.set_defaults(model=experiment.ModelKind.DIT, ema=0.998)  # 0.998^2000 = 2% of the zero init left in the EMA (0.999: 14%)
    p.add_argument("--order", type=Order, choices=list(Order), default=Order.CASCADED, help="training/sampling order (default: %(default)s)")
    p.add_argument("--encoder", type=Encoder, choices=list(Encoder), default=Encoder.TRAINED, help="latent encoder (default: %(default)s)")
    p.add_argument("--latent-channels", type=int, default=representations.FEATURE_CHANNELS,
                   help=f"latent channels: the encoder's features projected on their top principal channel directions (default: all {representations.FEATURE_CHANNELS})")
    p.add_argument("--latent-p", type=float, default=0.4, help="fraction of latent steps, cascaded order (default: %(default)s)")
    p.add_argument("--latent-weight", type=float, default=0.333, help="weight of the latent loss (default: %(default)s)")
    p.add_argument("--t-floor", type=float, default=0.05, help="clip in v = (z - x)/t, the paper's t_eps (default: %(default)s)")
    p.add_argument("--label-drop", type=float, default=0.1, help="CFG label dropout (default: %(default)s)")
    p.add_argument("--cfg", type=float, default=1.5, help="sampling CFG scale, both streams (default: %(default)s)")
    p.add_argument("--solver", type=Solver, choices=list(Solver), default=Solver.HEUN, help="sampling ODE solver (default: %(default)s)")
    p.add_argument("--ode-steps", type=int, default=20, help="sampling steps, split evenly between the two phases (default: %(default)s)")
    args = experiment.finalize_args(p.parse_args(argv))
    if not 1 <= args.latent_channels <= representations.FEATURE_CHANNELS:
        raise SystemExit(f"--latent-channels must be in [1, {representations.FEATURE_CHANNELS}], got {args.latent_channels}")
    if args.ode_steps < 2 or args.ode_steps % 2:
        raise SystemExit(f"--ode-steps must be even and >= 2 (two phases), got {args.ode_steps}")
    if args.smoke:
        args.ode_steps = min(args.ode_steps, 4)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.data != experiment.DIGITS or args.model is not experiment.ModelKind.DIT:
        raise SystemExit("Latent Forcing is a pixel-space transformer recipe: use --data digits --model dit")
    dist = train.init_distributed()
    train.seed_everything(args.seed, dist.rank)
    source = experiment.load_source(args.data)
    two_streams = args.order is not Order.PIXEL_ONLY
    encoder = representations.load_digits_encoder() if args.encoder is Encoder.TRAINED else representations.random_digits_encoder(args.seed)
    with torch.no_grad():
        features = encoder(source.images)
        project = PrincipalChannels.fit(features, args.latent_channels) if args.latent_channels < features.shape[1] else (lambda f: f)
        normalize = LatentNormalizer.fit(project(features), source.images)
    latent = lambda images: normalize(project(encoder(images)))  # noqa: E731
    channels = 1 + args.latent_channels * two_streams
    model = DiT(DiTConfig(channels=channels, patch=8 // representations.GRID, width=args.width, depth=args.depth,
                          num_classes=source.num_classes, time_inputs=TimeInputs.T_S))
    run = experiment.Setup(dist, source, model, train.prepare_model(model, dist), train.EMA(model, (args.ema,)))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    path, grid = LinearPath(), (representations.GRID, representations.GRID)

    def velocities(network: torch.nn.Module, z_pix: torch.Tensor, z_lat: torch.Tensor | None, t_pix: torch.Tensor, t_lat: torch.Tensor,
                   y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(v_pix, v_lat) implied by the network's x-predictions (v_lat None without the latent stream)."""
        if z_lat is None:
            return targets.velocity_from_x_prediction(z_pix, network(z_pix, t_pix, t_lat, y), t_pix, args.t_floor), None
        out = network(torch.cat([z_pix, latent_on_pixel_grid(z_lat, tuple(z_pix.shape[2:]))], dim=1), t_pix, t_lat, y)
        x_lat = latent_from_pixel_grid(out[:, 1:], grid)
        return (targets.velocity_from_x_prediction(z_pix, out[:, :1], t_pix, args.t_floor),
                targets.velocity_from_x_prediction(z_lat, x_lat, t_lat, args.t_floor))

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = source.batch(args.batch // dist.world_size)
        n = x.shape[0]
        y, _ = guidance.drop_labels(y, args.label_drop, source.null_class)
        if args.order is Order.CASCADED:
            times = latent_first_times(n, args.latent_p)
        elif args.order is Order.JOINT:
            times = independent_stream_times(n)
        else:
            times = StreamTimes(LATENT_FORCING_PIXEL_TIMES.sample(n), torch.ones(n), torch.ones(n), torch.zeros(n))
        z_pix, _ = sample_path(path, x, torch.randn_like(x), times.t_pix)
        v_pix = targets.velocity_from_x_prediction(z_pix, x, times.t_pix, args.t_floor)
        z_lat = v_lat = None
        if two_streams:
            with torch.no_grad():
                x_lat = latent(x)
            z_lat, _ = sample_path(path, x_lat, torch.randn_like(x_lat), times.t_lat)
            v_lat = targets.velocity_from_x_prediction(z_lat, x_lat, times.t_lat, args.t_floor)
        pred_pix, pred_lat = velocities(run.net, z_pix, z_lat, times.t_pix, times.t_lat, y)
        loss_pix = losses.squared_error(pred_pix, v_pix.detach(), losses.Reduce.MEAN)
        loss_lat = losses.squared_error(pred_lat, v_lat.detach(), losses.Reduce.MEAN) if two_streams else torch.zeros(n)
        loss = losses.two_stream_loss(loss_pix, loss_lat, times.pixel_weight, times.latent_weight, args.latent_weight)
        return loss, {"loss": loss.item(), "pixel": (times.pixel_weight * loss_pix).mean().item(), "latent": (times.latent_weight * loss_lat).mean().item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, f"latent_forcing[{args.order}]",
                                                     eval_flags=("ode_steps", "solver", "cfg"))
    if not dist.is_main:
        train.close_distributed()
        return {}
    denoiser = run.ema.averaged(args.ema).eval()

    def stream_field(y: torch.Tensor, w: float) -> sampling.StreamField:
        """CFG on both streams: v_u + w (v_c - v_u), one doubled batch (w = 1: the conditional field)."""
        if w == 1.0:
            return lambda zp, zl, tp, tl: velocities(denoiser, zp, zl, tp, tl, y)

        def field(zp, zl, tp, tl):
            two = lambda a: None if a is None else torch.cat([a, a])
            both = velocities(denoiser, two(zp), two(zl), two(tp), two(tl), torch.cat([y, torch.full_like(y, source.null_class)]))
            return tuple(None if v is None else guidance.cfg_combine(*v.chunk(2), w) for v in both)

        return field

    def generate(eps: torch.Tensor, y: torch.Tensor, w: float) -> torch.Tensor:
        field, n = stream_field(y, w), args.ode_steps
        if not two_streams:
            solve = sampling.heun if args.solver is Solver.HEUN else sampling.euler
            return solve(lambda z, t: field(z, None, t, torch.ones_like(t))[0], eps, uniform_grid(n))
        z_lat = torch.randn((eps.shape[0], args.latent_channels, *grid), generator=torch.Generator().manual_seed(args.seed + 778))
        grids = sampling.cascaded_stream_grids(n) if args.order is Order.CASCADED else sampling.simultaneous_stream_grids(n)
        solve = sampling.stream_heun if args.solver is Solver.HEUN else sampling.stream_euler
        return solve(field, eps, z_lat, *grids)[0]

    def pixels_given_data_latent(eps: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Diagnostic (no CFG): the pixel phase alone, t_lat = 0, on the clean latents of the evaluation's own
        images (half B of the digits, whose labels ``y`` are): how good the pixels are when the latent is right."""
        (_, _), (x_eval, y_eval) = data.digits_halves()
        if not torch.equal(y_eval[: y.shape[0]], y):
            raise RuntimeError("the evaluation labels are not half B's: cannot look up their images' latents")
        with torch.no_grad():
            z_lat = latent(x_eval[: y.shape[0]])
        field, solve = stream_field(y, 1.0), sampling.heun if args.solver is Solver.HEUN else sampling.euler
        return solve(lambda z, t: field(z, z_lat, t, torch.zeros_like(t))[0], eps, uniform_grid(args.ode_steps // 2))

    name = f"{args.solver}{args.ode_steps}"
    generators = {name: lambda eps, y: generate(eps, y, args.cfg), f"{name}_nocfg": lambda eps, y: generate(eps, y, 1.0)}
    if two_streams:
        generators[f"pixels_given_data_latent_{args.solver}{args.ode_steps // 2}"] = pixels_given_data_latent
    results, samples = experiment.evaluate(source, generators, n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "latent_forcing", "order": args.order.value, "train_seconds": train_seconds, "steps": args.steps,
                              "encoder": args.encoder.value, "cfg": args.cfg, "ode_steps": args.ode_steps, "solver": args.solver.value})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
