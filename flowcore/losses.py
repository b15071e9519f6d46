"""Loss transforms. Every function reduces over the non-batch dimensions explicitly and returns a
per-sample loss of shape (B,); the caller takes the batch mean.

- ``squared_error``: L_i = sum_d (or mean_d) (pred - target)^2.
- ``adaptive_weight``: w_i = 1 / (sg(L_i) + c)^p (MeanFlow, Geng et al. 2025: p = 1, c = 1e-2 on
  a sum over dims). The reduction changes what c means: c = 0.01 is small against a sum over 64 pixels.
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
    return 1.0 / (per_sample.detach() + c).pow(p)


def adaptively_weighted(per_sample: Tensor, p: float = 1.0, c: float = 1e-2) -> Tensor:
    """w L with w = adaptive_weight(L): the gradient is grad L / (L + c)^p (per sample)."""
    return adaptive_weight(per_sample, p, c) * per_sample


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
