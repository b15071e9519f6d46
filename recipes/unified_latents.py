"""Unified Latents (Heek, Hoogeboom, Mensink, Salimans 2026, arXiv 2602.17270) on 8x8 digits, stage 1.

A deterministic encoder maps an image to a latent z_clean (16 numbers); the latent is noised to the
prior's minimum noise level (one constant lambda_0, flowcore.latents.noisy_latent), a small class-
conditional diffusion prior models it, and a pixel diffusion decoder conditioned on z_0 reconstructs
the image. Encoder, prior and decoder train jointly with one optimizer on

    z_0 = alpha(lambda_0) E(x) + sigma(lambda_0) eps
    L_z = (-dlambda_z/dt) e^lambda_z / 2 ||z_clean - z_hat(z_t, t, y)||^2 + KL(q(z_1 | z_clean) || N(0, I))   (bitrate bound, nats)
    L_x = (-dlambda_x/dt) e^lambda_x / 2 sigmoid(b - lambda_x) ||x - x_hat(x_t, t; z_0)||^2
    L = loss_factor L_z + L_x,   t ~ U[0, 1] for each term

with v-prediction networks (x_hat = alpha z - sigma v).

Choices of this recipe (not from the paper): the encoder ends in tanh, so z_clean is bounded like the
pixels and lambda_0 caps the latent's precision (an unbounded encoder can rescale z_clean, and z -> c z
is close to lambda_0 -> lambda_0 + 2 log c); the loss factor (UL's knob beside the bias b) defaults to
0.1 and ramps up from 0 over --warmup-steps, because with factor 1 (and with 0.3 at lambda_0 = 7) the
latent collapsed to a few bits in short CPU runs (the decoder learns to read z_0 more slowly than the
prior loss shrinks it).

Evaluation: the latent bitrate bound on held-out digits (bits per image and per pixel, with and without
the class label), the decoder's reconstructions of held-out images (MSE, PSNR, Frechet distance, class
accuracy), and samples: ancestral sampling of the prior down to lambda_0, then of the decoder (FD +
class accuracy). Trained on the fixed 80 % digits split; the 20 % held-out split is never trained on.
Stage 2 (a separate base model on frozen latents) is not implemented.

    python recipes/unified_latents.py                 # lambda_0 = 5, outputs in runs/unified_latents/
    python recipes/unified_latents.py --lambda0 3     # noisier latents
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from flowcore import data, experiment, guidance, latents, metrics, train
from flowcore.latents import LogSNRSchedule, LogSNRShape
from flowcore.nn import MLP, MLPConfig


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=8000, batch=128, lr=1e-3, depth=4, out="runs/unified_latents")
    p.add_argument("--lambda0", type=float, default=5.0, help="log-SNR of the encoder noise = the prior's end point (default: %(default)s)")
    p.add_argument("--latent-dim", type=int, default=16, help="latent numbers per image (default: %(default)s)")
    p.add_argument("--bias", type=float, default=2.0, help="decoder sigmoid weight bias b in sigmoid(b - lambda) (default: %(default)s)")
    p.add_argument("--loss-factor", type=float, default=0.1, help="weight of the prior loss L_z (default: %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=1000, help="steps over which the loss factor ramps linearly from 0 (default: %(default)s)")
    p.add_argument("--schedule", type=LogSNRShape, choices=list(LogSNRShape), default=LogSNRShape.COSINE, help="log-SNR schedule shape (default: %(default)s)")
    p.add_argument("--prior-lambda-min", type=float, default=-10.0, help="prior's log-SNR at t = 1 (default: %(default)s)")
    p.add_argument("--decoder-lambdas", type=float, nargs=2, default=(10.0, -10.0), metavar=("MAX", "MIN"), help="decoder's log-SNR range (default: 10 -10)")
    p.add_argument("--encoder-width", type=int, default=256, help="encoder MLP width (default: %(default)s)")
    p.add_argument("--prior-width", type=int, default=256, help="prior MLP width; its depth is min(3, --depth) (default: %(default)s)")
    p.add_argument("--label-drop", type=float, default=0.1, help="prior label dropout (default: %(default)s)")
    p.add_argument("--cfg", type=float, default=1.0, help="prior CFG scale at sampling (default: %(default)s)")
    p.add_argument("--sample-steps", type=int, nargs="+", default=[25, 100], help="ancestral steps of prior and decoder, one evaluation each (default: 25 100)")
    p.add_argument("--bits-times", type=int, default=64, help="stratified t per held-out image for the bitrate estimate (default: %(default)s)")
    args = experiment.finalize_args(p.parse_args(argv))
    if args.smoke:
        args.encoder_width, args.prior_width = min(args.encoder_width, 32), min(args.prior_width, 32)
        args.sample_steps, args.bits_times = [4], 2
    for name in ("latent_dim", "bits_times", "encoder_width", "prior_width"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.fourier_features:
        raise SystemExit("--fourier-features does not apply: Unified Latents builds its own encoder, prior and decoder")
    if args.loss_factor < 0 or args.warmup_steps < 0 or min(args.sample_steps) < 1:
        raise SystemExit("--loss-factor and --warmup-steps must be >= 0 and --sample-steps >= 1")
    if args.data != experiment.DIGITS:
        raise SystemExit("unified latents is an image recipe: use --data digits")
    if args.model is not experiment.ModelKind.MLP:
        raise SystemExit("unified latents uses MLP networks: use --model mlp")
    return args


class LatentConditioned(nn.Module):
    """The decoder network: a flowcore MLP on the concatenation [x_t, z_0] (dim 64 + latent_dim), whose
    first 64 outputs are the v-prediction of the image (the other outputs are unused)."""

    def __init__(self, pixels: int, latent_dim: int, width: int, depth: int):
        super().__init__()
        self.pixels = pixels
        self.net = MLP(MLPConfig(dim=pixels + latent_dim, width=width, depth=depth))

    def forward(self, x_t: Tensor, t: Tensor, z0: Tensor) -> Tensor:
        out = self.net(torch.cat([x_t.flatten(1), z0], dim=1), t, t)
        return out[:, :self.pixels].reshape(x_t.shape)


def build(args: argparse.Namespace) -> nn.ModuleDict:
    w = args.encoder_width
    return nn.ModuleDict({
        "encoder": nn.Sequential(nn.Flatten(), nn.Linear(64, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU(), nn.Linear(w, args.latent_dim), nn.Tanh()),
        "prior": MLP(MLPConfig(dim=args.latent_dim, width=args.prior_width, depth=min(args.depth, 3), num_classes=10)),
        "decoder": LatentConditioned(64, args.latent_dim, args.width, args.depth),
    })


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    dist = train.init_distributed()
    train.seed_everything(args.seed, dist.rank)
    (x_train, y_train), (x_held, y_held) = data.digits_train_heldout()
    source = experiment.Source(experiment.DIGITS, (1, 8, 8), 10, x_train, y_train)
    model = build(args)
    # One module holds encoder, prior and decoder, so the EMA and the checkpoint cover all three consistently.
    run = experiment.Setup(dist, source, model, train.prepare_model(model, dist), train.EMA(model, (args.ema,)))
    net = run.net
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    prior_sched = latents.prior_schedule(args.lambda0, args.prior_lambda_min, args.schedule)
    dec_sched = LogSNRSchedule(*args.decoder_lambdas, args.schedule)

    def prior_x(prior: nn.Module, z: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return latents.x_from_v(z, prior(z, t, t, y), prior_sched.lam(t))

    def decoder_x(decoder: nn.Module, x: Tensor, t: Tensor, z0: Tensor) -> Tensor:
        return latents.x_from_v(x, decoder(x, t, z0), dec_sched.lam(t))

    def loss_fn(step: int) -> tuple[Tensor, dict[str, float]]:
        x, y = source.batch(args.batch // dist.world_size)
        y, _ = guidance.drop_labels(y, args.label_drop, source.null_class)
        n = x.shape[0]
        z_clean = net["encoder"](x)
        z0 = latents.noisy_latent(z_clean, torch.randn_like(z_clean), prior_sched)
        t_z, t_x = torch.rand(n), torch.rand(n)
        z_t = latents.diffuse(z_clean, torch.randn_like(z_clean), prior_sched.lam(t_z))
        loss_z = latents.prior_loss(z_clean, prior_x(net["prior"], z_t, t_z, y), t_z, prior_sched)
        x_t = latents.diffuse(x, torch.randn_like(x), dec_sched.lam(t_x))
        loss_x = latents.decoder_loss(x, decoder_x(net["decoder"], x_t, t_x, z0), t_x, dec_sched, args.bias)
        factor = args.loss_factor * min(1.0, (step + 1) / (args.warmup_steps + 1))
        loss = (factor * loss_z + loss_x).mean()
        return loss, {"loss": loss.item(), "bits_z": float(latents.nats_to_bits(loss_z.mean().item())), "loss_x": loss_x.mean().item()}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "unified_latents")
    if not dist.is_main:
        train.close_distributed()
        return {}
    ema = run.ema.averaged(args.ema).eval()
    encoder, prior, decoder = ema["encoder"], ema["prior"], ema["decoder"]

    def decode(z0: Tensor, eps: Tensor, steps: int, g: torch.Generator) -> Tensor:
        den = lambda x, t: decoder_x(decoder, x, t, z0)
        x = latents.ancestral_sample(den, eps, torch.linspace(1, 0, steps + 1), dec_sched, g)
        return den(x, torch.zeros(x.shape[0]))

    def generate(eps: Tensor, y: Tensor, steps: int) -> Tensor:
        g = torch.Generator().manual_seed(args.seed + 1)
        field = guidance.guided(lambda z, t, s, y_: prior_x(prior, z, t, y_), y, args.cfg, source.null_class)
        z1 = torch.randn((eps.shape[0], args.latent_dim), generator=g)
        z0 = latents.ancestral_sample(lambda z, t: field(z, t, t), z1, torch.linspace(1, 0, steps + 1), prior_sched, g)
        return decode(z0, eps, steps, g)

    generators = {f"{k}steps": (lambda eps, y, k=k: generate(eps, y, k)) for k in args.sample_steps}
    results, samples = experiment.evaluate(source, generators, n=args.eval_samples, seed=args.seed)
    latent, recon, pairs = held_out_report(args, encoder, prior, decode, prior_sched, x_held, y_held)
    samples["reconstruction"] = pairs
    experiment.write_outputs(args.out, args, source, results, samples, history, {
        "recipe": "unified_latents", "train_seconds": train_seconds, "steps": args.steps, "lambda0": args.lambda0,
        "sigma0": latents.alpha_sigma(torch.tensor([args.lambda0], dtype=torch.float64))[1].item(), "bias": args.bias, "latent": latent, "reconstruction": recon})
    train.print_table({"latent": latent, "reconstruction": recon})
    train.close_distributed()
    return {**results, "latent": latent, "reconstruction": recon}


@torch.no_grad()
def held_out_report(args: argparse.Namespace, encoder: nn.Module, prior: nn.Module, decode, prior_sched: LogSNRSchedule,
                    x: Tensor, y: Tensor) -> tuple[dict, dict, Tensor]:
    """Bitrate bound (stratified t, with the class label and with the null label) and reconstructions of held-out x."""
    g = torch.Generator().manual_seed(args.seed + 2)
    z_clean = encoder(x)
    nats = {"cond": torch.zeros(x.shape[0]), "uncond": torch.zeros(x.shape[0])}
    for k in range(args.bits_times):
        t = (k + torch.rand(x.shape[0], generator=g)) / args.bits_times
        z_t = latents.diffuse(z_clean, torch.randn(z_clean.shape, generator=g), prior_sched.lam(t))
        for name, labels in (("cond", y), ("uncond", torch.full_like(y, prior.config.num_classes))):
            z_hat = latents.x_from_v(z_t, prior(z_t, t, t, labels), prior_sched.lam(t))
            nats[name] += latents.prior_loss(z_clean, z_hat, t, prior_sched) / args.bits_times
    kl1 = latents.terminal_kl(z_clean, prior_sched).mean().item()
    bits = float(latents.nats_to_bits(nats["cond"].mean().item()))
    latent = {"bits_per_image": bits, "bits_per_pixel": bits / 64, "bits_per_image_uncond": float(latents.nats_to_bits(nats["uncond"].mean().item())),
              "terminal_kl_bits": float(latents.nats_to_bits(kl1)), "z_clean_rms": z_clean.pow(2).mean().sqrt().item()}
    z0 = latents.noisy_latent(z_clean, torch.randn(z_clean.shape, generator=g), prior_sched)
    x_rec = decode(z0, torch.randn(x.shape, generator=g), max(args.sample_steps), g).clamp(-1, 1)
    mse = (x_rec - x).pow(2).mean().item()
    judge = metrics.DigitsJudge.load()
    recon = {"mse": mse, "psnr": metrics.psnr(x_rec, x, data_range=2.0), "fd": judge.fd(x_rec, x), "class_acc": judge.class_accuracy(x_rec, y)}
    m = min(50, x.shape[0] // 10 * 10)
    pairs = torch.stack([x[:m].reshape(-1, 10, *x.shape[1:]), x_rec[:m].reshape(-1, 10, *x.shape[1:])], dim=1).reshape(2 * m, *x.shape[1:])
    return latent, recon, pairs


if __name__ == "__main__":
    experiment.run_script(main)
