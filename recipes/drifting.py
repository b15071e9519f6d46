"""Drifting Models ("Generative Modeling via Drifting", Deng, Li, Li, Du, He 2026, arXiv 2602.04770):
a one-step generator trained so that its samples stop drifting. No time, no ODE, no derivative.

The generator is the network called at fixed times, x = G(eps[, y]) = net(eps, t=1, s=0[, y]); its
zero-initialised output layer makes it start collapsed at x = 0 (the paper's toys recover from a
collapsed init; on digits this converged faster than starting at x = eps). Each step (Alg. 1, App. A.6):

    x = G(eps),   y+ = data,   y- = sg(x)        (on digits: one field per class, positives of that class)
    per feature phi_j (C_j dims):
    S = E||phi(x) - phi(y)|| / sqrt(C)             feature normalisation: mean pairwise distance sqrt(C)
    V~ = sum_tau V(phi/S; tau sqrt(C)) / lambda_tau,   lambda_tau = sqrt(E||V_tau||^2 / C)
    L = sum_j mean_i || phi_j(x_i)/S - sg(phi_j(x_i)/S + V~_i) ||^2 / C_j

with V of Algorithm 2 (logits -||x - y||/tau over [y+ | y-], self-pairs masked, A = sqrt(softmax_row
softmax_col), W+ = A+ rowsum(A-), W- = A- rowsum(A+), V = W+ y+ - W- y-), tau in {0.02, 0.05, 0.2}.
--attraction 1.5 scales the attraction term alone: the paper's broken-anti-symmetry ablation.
Features (--features): raw coordinates / pixels; on digits optionally also the feature map of the
frozen self-supervised encoder of flowcore.representations (never the FD judge's classifier).
Logged: the loss (about constant, the drift is normalised) and lambda_tau, the raw drift magnitudes
that fall as the generated distribution meets the data.

--batch is the number of generated samples per step (on digits 32 per class by default), split over
processes; each field also takes --positives data samples (per class on digits).

    python recipes/drifting.py                                         # digits, 1-NFE samples in runs/drifting/
    python recipes/drifting.py --attraction 1.5 --out runs/drifting_attraction1.5
    python recipes/drifting.py --data checkerboard --steps 4000 --batch 256 --lr 1e-3 --out runs/drifting_checkerboard
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable

import torch
from torch import Tensor

from flowcore import drifting, experiment, representations, train


class Features(enum.Enum):
    """The feature maps phi_j whose drifting losses are summed."""

    RAW = "raw"
    RAW_AND_ENCODER = "raw+encoder"

    def __str__(self) -> str:
        return self.value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, data="digits", steps=6000, batch=320, lr=2e-3, depth=4, out="runs/drifting")
    p.add_argument("--attraction", type=float, default=1.0, help="scale of the attraction term; 1 = anti-symmetric field (default: %(default)s)")
    p.add_argument("--temperatures", type=float, nargs="+", default=list(drifting.PAPER_TEMPERATURES),
                   help="kernel temperatures, in units of sqrt(C) of the normalised features (default: %(default)s)")
    p.add_argument("--positives", type=int, default=None,
                   help="data samples per field and process: per class on digits (default: as many as the generated samples per field)")
    p.add_argument("--features", type=Features, choices=list(Features), default=Features.RAW,
                   help="raw coordinates / pixels, or on digits also the frozen encoder's (16, 4, 4) feature map (default: %(default)s)")
    p.add_argument("--no-drift-normalization", action="store_true", help="ablation: sum the raw drifts instead of the lambda-normalised ones")
    args = experiment.finalize_args(p.parse_args(argv))
    if args.smoke:
        args.batch = min(args.batch, 40 if args.data == experiment.DIGITS else 64)
    if args.attraction <= 0 or not args.temperatures or min(args.temperatures) <= 0:
        raise SystemExit(f"need --attraction > 0 and --temperatures > 0; got {args.attraction}, {args.temperatures}")
    if args.features is not Features.RAW and args.data != experiment.DIGITS:
        raise SystemExit("--features raw+encoder needs --data digits")
    if args.positives is not None and args.positives < 1:
        raise SystemExit(f"--positives must be >= 1, got {args.positives}")
    return args


def class_positives(source: experiment.Source, per_field: int) -> Tensor:
    """(K, per_field, D) data drawn with the global RNG: K = 1 field on 2D, one per class on digits."""
    if not source.conditional:
        return source.batch(per_field)[0][None]
    rows = []
    for c in range(source.num_classes):
        members = (source.labels == c).nonzero().squeeze(1)
        rows.append(source.images[members[torch.randint(members.shape[0], (per_field,))]])
    return torch.stack(rows).flatten(2)


def feature_maps(features: Features, source: experiment.Source) -> Callable[[Tensor], list[Tensor]]:
    """x (K, N, D) -> [phi_j(x) (K, N, C_j)]: the raw data, then (digits) the frozen encoder's features."""
    encoder = representations.load_digits_encoder() if features is Features.RAW_AND_ENCODER else None

    def phi(x: Tensor) -> list[Tensor]:
        if encoder is None:
            return [x]
        k, n = x.shape[:2]
        return [x, encoder(x.reshape(k * n, *source.shape)).reshape(k, n, -1)]

    return phi


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    run = experiment.setup(args)
    dist, source, net, ema = run.dist, run.source, run.net, run.ema
    fields = max(source.num_classes, 1)
    per_field = args.batch // (dist.world_size * fields)
    if per_field < 2:
        raise SystemExit(f"--batch {args.batch} leaves {per_field} generated samples per field and process: need >= 2 ({fields} fields, {dist.world_size} processes)")
    positives = args.positives or per_field
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr, betas=(0.9, 0.95))

    phi = feature_maps(args.features, source)

    def generate(model: torch.nn.Module, eps: Tensor, y: Tensor | None) -> Tensor:
        """x = G(eps[, y]): the network at fixed times t = 1, s = 0."""
        return model(eps, torch.ones(eps.shape[0]), torch.zeros(eps.shape[0]), y)

    def loss_fn(step: int) -> tuple[Tensor, dict[str, float]]:
        y = torch.arange(fields).repeat_interleave(per_field) if source.conditional else None
        x = generate(net, torch.randn(fields * per_field, *source.shape), y).reshape(fields, per_field, -1)
        with torch.no_grad():
            phi_pos = phi(class_positives(source, positives))
        loss, logs = torch.zeros(()), {}
        for j, (phi_x, phi_y) in enumerate(zip(phi(x), phi_pos)):
            per_query, lambdas = drifting.drifting_feature_loss(
                phi_x, phi_y, phi_x.detach(), args.temperatures,
                exclude_self=True, attraction=args.attraction, normalize_drift=not args.no_drift_normalization)
            loss = loss + per_query.mean()
            logs.update({f"lambda{j}_{tau:g}": lam.item() for tau, lam in zip(args.temperatures, lambdas)})
        return loss, {"loss": loss.item(), **logs}

    history, train_seconds = experiment.run_training(args, run, loss_fn, optimizer, "drifting")
    if not dist.is_main:
        train.close_distributed()
        return {}
    student = ema.averaged(args.ema).eval()
    generators = {"1nfe": lambda eps, y: generate(student, eps, y)}
    results, samples = experiment.evaluate(source, generators, n=args.eval_samples, seed=args.seed)
    experiment.write_outputs(args.out, args, source, results, samples, history,
                             {"recipe": "drifting", "train_seconds": train_seconds, "steps": args.steps, "attraction": args.attraction,
                              "temperatures": args.temperatures, "features": args.features.value})
    train.close_distributed()
    return results


if __name__ == "__main__":
    experiment.run_script(main)
