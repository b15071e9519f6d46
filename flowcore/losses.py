"""Loss transforms. Every function reduces over the non-batch dimensions explicitly and returns a
per-sample loss of shape (B,); the caller takes the batch mean.

- ``squared_error``: L_i = sum_d (or mean_d) (pred - target)^2.
- ``adaptive_weight``: w_i = 1 / (sg(L_i) + c)^p (MeanFlow, Geng et al. 2025: p = 1, c = 1e-2 on
  a sum over dims). The reduction changes what c means: c = 0.01 is small against a sum over 64 pixels.
  The weight changes the estimator, not only the step size: the gradient grad L / (L + c)^p is, for
  p = 1, that of log(L + c), whose minimiser over a noisy target (the conditional velocity of the s = t
  rows) is a mode-seeking robust location, not the conditional mean E[v | z] that flow matching needs.
  Measured on the checkerboard (README, meanflow rows, sampler velocity_euler100): 100 Euler steps on
  MeanFlow's own diagonal u(z, t, t) reach sliced W2 0.054 with p = 0 (the FM teacher's Euler-100:
  0.053), 0.107 with p = 0.5 and 0.213 with p = 1, although p >= 0.5 gives the better 1-step map.
- ``learned_log_variance``: L_i e^{-lv_i} + lv_i (EDM2's uncertainty weighting, Karras et al. 2024).
- ``adaptive_cauchy``: log(L_i e^{-lv_i} + c) + lv_i (Decoupled MeanFlow, Lee et al. 2025), whose
  gradient weight is 1 / (L_i + c e^{lv_i}).
- ``pseudo_huber``: sqrt(||pred - target||^2 + c^2) - c (iCT, Song & Dhariwal 2024; c = 0.00054 sqrt(d)).
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor


class Reduce(enum.Enum):
    SUM = "sum"
    MEAN = "mean"


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
    if target.requires_grad:
        raise ValueError("the target carries a gradient: detach it (targets are stop-gradded)")


def squared_error(pred: Tensor, target: Tensor, reduce: Reduce) -> Tensor:
    """Per-sample squared error, summed or averaged over all non-batch dimensions."""
    if not isinstance(reduce, Reduce):
        raise TypeError(f"reduce must be a flowcore.losses.Reduce, got {reduce!r}")
    _check_pair(pred, target)
    sq = (pred - target).pow(2).flatten(1)
    return sq.sum(1) if reduce is Reduce.SUM else sq.mean(1)


def adaptive_weight(per_sample: Tensor, p: float = 1.0, c: float = 1e-2) -> Tensor:
    """w = 1 / (sg(L) + c)^p, detached."""
    if c <= 0:
        raise ValueError(f"adaptive weight needs c > 0, got {c}")
    if p < 0:
        raise ValueError(f"adaptive weight needs a power p >= 0 (0 = plain squared error), got {p}")
    return 1.0 / (per_sample.detach() + c).pow(p)


def adaptively_weighted(per_sample: Tensor, p: float = 1.0, c: float = 1e-2) -> Tensor:
    """w L with w = adaptive_weight(L): the gradient is grad L / (L + c)^p (per sample)."""
    return adaptive_weight(per_sample, p, c) * per_sample


def improved_meanflow_loss(compound: Tensor, velocity: Tensor, target: Tensor, c: float = 1e-2, p: float = 1.0,
                           v_weight: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """improved MeanFlow's two-head objective (Geng et al. 2025b, arXiv 2512.02012), per sample:

        L = w(L_u) L_u + lambda w(L_v) L_v,  L_u = ||V - v_g||^2,  L_v = ||v - v_g||^2  (sums over dims)

    with V the compound velocity u + (t - s) sg(du/dt) (``targets.compound_velocity``), v the velocity
    head, v_g the (guided, stop-gradded) velocity target and w = 1 / (sg(L) + c)^p (adaptive weight;
    iMF uses p = 1, p = 0 is the plain squared error); lambda = ``v_weight`` (iMF: 1). Returns (L, L_u, L_v), each (B,)."""
    if v_weight < 0:
        raise ValueError(f"v_weight must be >= 0, got {v_weight}")
    loss_u = squared_error(compound, target, Reduce.SUM)
    loss_v = squared_error(velocity, target, Reduce.SUM)
    return adaptively_weighted(loss_u, p, c) + v_weight * adaptively_weighted(loss_v, p, c), loss_u, loss_v


def learned_log_variance(per_sample: Tensor, log_var: Tensor) -> Tensor:
    """L e^{-lv} + lv: minimised over lv at lv = log L."""
    return per_sample * torch.exp(-log_var) + log_var


def adaptive_cauchy(per_sample: Tensor, log_var: Tensor, c: float = 1e-2) -> Tensor:
    """log(L e^{-lv} + c) + lv (DMF's 'adaptive weighted Cauchy' loss)."""
    return torch.log(per_sample * torch.exp(-log_var) + c) + log_var


def pseudo_huber(pred: Tensor, target: Tensor, c: float) -> Tensor:
    """sqrt(||pred - target||_2^2 + c^2) - c per sample."""
    _check_pair(pred, target)
    return torch.sqrt((pred - target).pow(2).flatten(1).sum(1) + c * c) - c


def progressive_gap_weight(gap: Tensor, remaining: float, lam: float) -> Tensor:
    """The progressive u-loss weight of "Understanding, Accelerating, and Improving MeanFlow Training"
    (Kim et al. 2025, arXiv 2511.19065):  beta(dt, s) = 1 - s + lam s (1 - dt),

    dt = t - s_target the gap of the pair and s = ``remaining`` = 1 - step/steps the part of training
    still ahead (1 -> 0; the paper's s, not flowcore's target time). At the start small gaps weigh
    most, lam (1 - dt); at the end every gap weighs 1. lam = 1 / E[1 - dt] (``gap_weight_normalizer``)
    makes the initial mean weight 1. The gap is the same in the paper's time direction and in
    flowcore's, so nothing converts. Detached, (B,).
    """
    if not 0.0 <= remaining <= 1.0:
        raise ValueError(f"remaining training fraction must lie in [0, 1], got {remaining}")
    if lam <= 0:
        raise ValueError(f"lam must be positive, got {lam}")
    if (gap < 0).any() or (gap > 1).any():
        raise ValueError("gaps t - s must lie in [0, 1]")
    return (1.0 - remaining) + lam * remaining * (1.0 - gap.detach())


def gap_weight_normalizer(gap: Tensor) -> float:
    """lam = 1 / mean(1 - dt) over sampled gaps, so that ``progressive_gap_weight`` starts at mean 1."""
    mean = (1.0 - gap.detach()).mean().item()
    if not mean > 0:
        raise ValueError("gaps must not all be 1")
    return 1.0 / mean


def min_snr_velocity_weight(t: Tensor, gamma: float = 5.0) -> Tensor:
    """Min-SNR-gamma (Hang et al. 2023, arXiv 2303.09556) moved onto a velocity loss on the linear path.

    Min-SNR weighs the x-space loss ||x_hat - x||^2 by min(SNR_t, gamma), SNR_t = ((1 - t) / t)^2 (t = 1
    noise). On the linear path x_hat - x = -t (v_hat - v), so the same objective on the velocity loss
    has weight w(t) = t^2 min(SNR_t, gamma) = min((1 - t)^2, gamma t^2) (the same as its eps-space
    form min(SNR, gamma)/SNR, since eps_hat - eps = (1 - t)(v_hat - v)). Detached, (B,).
    """
    if gamma <= 0:
        raise ValueError(f"Min-SNR gamma must be positive, got {gamma}")
    t = t.detach()
    return torch.minimum((1.0 - t) ** 2, gamma * t**2)


def guidance_scale_weight(w: Tensor) -> Tensor:
    """1 / w^2 per sample for a loss on guidance-scaled velocities (Terminal Velocity Matching, Zhou
    et al. 2025, arXiv 2511.19797, official loss: ((pred - target) / w)^2).

    With the CFG scale w >= 1 as a network input and outputs scaled by w, a guided velocity grows
    like w, so an unweighted squared error lets the large-w rows dominate a batch of random scales;
    1/w^2 puts every row on the scale of an unguided velocity. Detached, (B,).
    """
    if w.dim() != 1 or (w < 1).any():
        raise ValueError(f"guidance scales must be a (B,) tensor with values >= 1, got shape {tuple(w.shape)}")
    return 1.0 / w.detach() ** 2


def consistency_gap_weight(t: Tensor, s: Tensor) -> Tensor:
    """improved consistency training's weight lambda(sigma_n) = 1 / (sigma_{n+1} - sigma_n) (Song &
    Dhariwal 2023, arXiv 2310.14189), on flowcore's pair s < t < 1 of the linear path:
    sigma = t / (1 - t), so the weight is 1 / (t / (1 - t) - s / (1 - s)). Computed in fp64, detached, (B,)."""
    if t.shape != s.shape or t.dim() != 1:
        raise ValueError(f"t and s must be (B,) tensors of one shape, got {tuple(t.shape)} and {tuple(s.shape)}")
    if not bool((s < t).all()) or not bool((t < 1).all()) or (s < 0).any():
        raise ValueError("consistency_gap_weight needs 0 <= s < t < 1 on every row")
    t64, s64 = t.detach().double(), s.detach().double()
    return (1.0 / (t64 / (1 - t64) - s64 / (1 - s64))).to(t.dtype)


def two_stream_loss(pixel_loss: Tensor, latent_loss: Tensor, pixel_weight: Tensor, latent_weight: Tensor,
                    latent_scale: float = 0.333) -> Tensor:
    """Latent Forcing's loss (Baade et al. 2026, arXiv 2602.11401, official ``DenoiserCoT.forward``):

        L = (1/B) sum_i w_pix,i L_pix,i + latent_scale (1/B) sum_i w_lat,i L_lat,i

    with per-sample losses L (B,) (the official code: mean over each stream's elements) and per-row
    stream weights w (B,) (0/1 for the cascaded sampler). Both means run over the whole batch, not over
    the rows of one stream, so a stream chosen on a fraction p of the rows weighs p in the total. Scalar."""
    for name, x in (("pixel_loss", pixel_loss), ("latent_loss", latent_loss), ("pixel_weight", pixel_weight), ("latent_weight", latent_weight)):
        if x.dim() != 1 or x.shape != pixel_loss.shape:
            raise ValueError(f"two_stream_loss: {name} must be a (B,) tensor like pixel_loss {tuple(pixel_loss.shape)}, got {tuple(x.shape)}")
    if latent_scale < 0:
        raise ValueError(f"latent_scale must be >= 0, got {latent_scale}")
    return (pixel_weight * pixel_loss).mean() + latent_scale * (latent_weight * latent_loss).mean()
