"""The drifting field of Drifting Models ("Generative Modeling via Drifting", Deng, Li, Li, Du, He 2026,
arXiv 2602.04770): a one-step generator x = f(eps) is trained so that its samples stop drifting,

    L = E || phi(x) - sg(phi(x) + V(phi(x))) ||^2,   V = V^+_p - V^-_q   (attraction to data p,
                                                                          repulsion from generated q)

with V computed from a batch of positives y+ ~ p (data) and negatives y- ~ q (the generated batch
itself) by the paper's Algorithm 2 (``drifting_field``), in normalised feature spaces and summed over
several kernel temperatures (App. A.6, ``normalized_drift``, ``drifting_feature_loss``).

Shapes: every function takes (..., N, D) queries, (..., P, D) positives and (..., M, D) negatives; the
leading dims (e.g. one per class: the paper computes the field within per-class batches) are
independent fields. Nothing here detaches: callers pass detached features where the paper takes sg.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flowcore import losses, targets

PAPER_TEMPERATURES = (0.02, 0.05, 0.2)
"""The kernel temperatures whose normalised drifts the paper sums (App. A.6), in units of sqrt(C)."""


def _check_sets(x: Tensor, y_pos: Tensor, y_neg: Tensor) -> None:
    for name, t in (("x", x), ("y_pos", y_pos), ("y_neg", y_neg)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() < 2:
            raise ValueError(f"drifting: {name} must be a float tensor of shape (..., n, D), got {type(t).__name__} {tuple(getattr(t, 'shape', ()))}")
        if t.shape[-2] < 1:
            raise ValueError(f"drifting: {name} is empty")
    if not (x.shape[:-2] == y_pos.shape[:-2] == y_neg.shape[:-2]) or not (x.shape[-1] == y_pos.shape[-1] == y_neg.shape[-1]):
        raise ValueError(f"drifting: x {tuple(x.shape)}, y_pos {tuple(y_pos.shape)}, y_neg {tuple(y_neg.shape)} must share "
                         "their leading dims and feature dim D: (..., N, D), (..., P, D), (..., M, D)")
    if not (x.dtype == y_pos.dtype == y_neg.dtype):
        raise ValueError(f"drifting: dtypes differ: x {x.dtype}, y_pos {y_pos.dtype}, y_neg {y_neg.dtype}")


def kernel_affinities(x: Tensor, y_pos: Tensor, y_neg: Tensor, tau: float, *, exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """The doubly normalised affinities of Algorithm 2 (arXiv 2602.04770, App. A.1):

        logits_ij = -||x_i - y_j|| / tau  over the columns y = [y+ | y-]
        A = sqrt( softmax_j(logits) * softmax_i(logits) )          (row softmax times column softmax)

    returned split as (A_pos (..., N, P), A_neg (..., N, M)). ``exclude_self`` says that the negatives
    are the queries themselves (y- = x, M = N): the self-pairs (i, i) of the negative block are masked
    out of both softmaxes (the paper adds a large distance; here their logit is -inf, weight exactly 0).
    """
    _check_sets(x, y_pos, y_neg)
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"drifting: the temperature must be a finite number > 0, got {tau!r}")
    n, p = x.shape[-2], y_pos.shape[-2]
    logits = -torch.cdist(x, torch.cat([y_pos, y_neg], dim=-2)) / tau
    if exclude_self:
        if y_neg.shape[-2] != n:
            raise ValueError(f"drifting: exclude_self needs the negatives to be the queries (M = N), got M={y_neg.shape[-2]}, N={n}")
        if n < 2:
            raise ValueError("drifting: exclude_self needs at least 2 queries (a query's only negative would be itself)")
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        logits[..., :, p:] = logits[..., :, p:].masked_fill(eye, -math.inf)
    a = torch.sqrt(torch.softmax(logits, dim=-1) * torch.softmax(logits, dim=-2))
    return a[..., :p], a[..., p:]


def drifting_field(x: Tensor, y_pos: Tensor, y_neg: Tensor, tau: float, *, exclude_self: bool = False, attraction: float = 1.0) -> Tensor:
    """V(x; y+, y-, tau) of Algorithm 2 (arXiv 2602.04770), with an attraction scale a:

        W+ = A+ * rowsum(A-),   W- = A- * rowsum(A+)         (A+, A- from ``kernel_affinities``)
        V  = a (W+ @ y+ - rowsum(W+) x) - (W- @ y- - rowsum(W-) x)       (..., N, D)

    With a = 1 the two rowsums are equal, so V = W+ @ y+ - W- @ y- exactly as in the paper, and the
    field is anti-symmetric: V(x; y+, y-) = -V(x; y-, y+), hence V = 0 where y+ and y- are the same
    samples (an equilibrium when the generated distribution is the data). a != 1 scales the attraction
    V+ = sum_j W+_ij (y+_j - x_i) alone (a = 1.5 is the paper's broken-anti-symmetry ablation),
    and then V no longer vanishes at equilibrium.
    """
    if not (isinstance(attraction, (int, float)) and math.isfinite(attraction) and attraction > 0):
        raise ValueError(f"drifting: the attraction scale must be a finite number > 0, got {attraction!r}")
    a_pos, a_neg = kernel_affinities(x, y_pos, y_neg, tau, exclude_self=exclude_self)
    w_pos = a_pos * a_neg.sum(dim=-1, keepdim=True)
    w_neg = a_neg * a_pos.sum(dim=-1, keepdim=True)
    v_pos = w_pos @ y_pos - w_pos.sum(dim=-1, keepdim=True) * x
    v_neg = w_neg @ y_neg - w_neg.sum(dim=-1, keepdim=True) * x
    return attraction * v_pos - v_neg


def feature_scale(x: Tensor, y: Tensor) -> Tensor:
    """The feature normalisation of arXiv 2602.04770 (App. A.6): S = E_ij ||x_i - y_j|| / sqrt(C)
    over all pairs (and all leading dims) of queries x (..., N, C) and references y (..., M, C), so
    that the features phi / S have mean pairwise distance sqrt(C). Returns a 0-d tensor."""
    if x.dim() < 2 or x.shape[:-2] != y.shape[:-2] or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"feature_scale: x {tuple(x.shape)} and y {tuple(y.shape)} must be (..., N, C) and (..., M, C)")
    scale = torch.cdist(x, y).mean() / math.sqrt(x.shape[-1])
    if not torch.isfinite(scale) or scale <= 0:
        raise ValueError(f"feature_scale: the mean pairwise distance is {scale.item()}: all features coincide or are not finite")
    return scale


def drift_scale(v: Tensor) -> Tensor:
    """The drift normalisation of arXiv 2602.04770 (App. A.6): lambda = sqrt(E_i ||V_i||^2 / C) over
    all queries (and leading dims) of V (..., N, C). Returns a 0-d tensor (0 where V vanishes)."""
    if v.dim() < 2:
        raise ValueError(f"drift_scale: V must be (..., N, C), got {tuple(v.shape)}")
    return v.pow(2).sum(dim=-1).mean().div(v.shape[-1]).sqrt()


def normalized_drift(x: Tensor, y_pos: Tensor, y_neg: Tensor, temperatures: Sequence[float] = PAPER_TEMPERATURES, *,
                     exclude_self: bool = False, attraction: float = 1.0, normalize_drift: bool = True) -> tuple[Tensor, Tensor]:
    """The multi-temperature drift of arXiv 2602.04770 (App. A.6) in features already normalised by
    ``feature_scale`` (mean pairwise distance sqrt(C)):

        V~ = sum_tau V(x; y+, y-, tau sqrt(C)) / lambda_tau,   lambda_tau = drift_scale(V(., tau sqrt(C)))

    (``normalize_drift=False``: the plain sum of the V's). Returns (V~ (..., N, C), the lambda_tau (T,)).
    A temperature whose V vanishes exactly (lambda = 0) contributes 0.
    """
    if len(temperatures) < 1:
        raise ValueError("normalized_drift: give at least one temperature")
    c = x.shape[-1]
    total, lambdas = torch.zeros_like(x), []
    for tau in temperatures:
        v = drifting_field(x, y_pos, y_neg, tau * math.sqrt(c), exclude_self=exclude_self, attraction=attraction)
        lam = drift_scale(v)
        lambdas.append(lam)
        total = total + (v / torch.where(lam > 0, lam, torch.ones_like(lam)) if normalize_drift else v)
    return total, torch.stack(lambdas)


def drifting_feature_loss(phi_x: Tensor, phi_pos: Tensor, phi_neg: Tensor, temperatures: Sequence[float] = PAPER_TEMPERATURES, *,
                          exclude_self: bool = False, attraction: float = 1.0, normalize_drift: bool = True) -> tuple[Tensor, Tensor]:
    """One feature's drifting loss (arXiv 2602.04770, Alg. 1 and App. A.6), per query:

        S = feature_scale(sg phi(x), [y+ | y-]),  phi~ = phi / S,  V~ = normalized_drift(sg phi~(x), y+/S, y-/S)
        L_i = mean_d ( phi~(x_i) - sg(phi~(x_i) + V~_i) )^2          (..., N); its value is ||V~_i||^2 / C

    The gradient reaches the generator only through phi(x): dL_i/dphi~(x_i) = -2 V~_i / C. ``phi_pos`` and
    ``phi_neg`` must carry no gradient (the negatives are the detached generated features; pass
    ``exclude_self=True`` then). Returns (per-query loss (..., N), the lambda_tau (T,)).
    """
    if phi_pos.requires_grad or phi_neg.requires_grad:
        raise ValueError("drifting_feature_loss: positives and negatives must be detached (the field is stop-gradded)")
    _check_sets(phi_x, phi_pos, phi_neg)
    with torch.no_grad():
        scale = feature_scale(phi_x.detach(), torch.cat([phi_pos, phi_neg], dim=-2))
    phi = phi_x / scale
    with torch.no_grad():
        v, lambdas = normalized_drift(phi.detach(), phi_pos / scale, phi_neg / scale, temperatures,
                                      exclude_self=exclude_self, attraction=attraction, normalize_drift=normalize_drift)
    lead, n, c = phi.shape[:-2], phi.shape[-2], phi.shape[-1]
    flat = phi.reshape(-1, c)
    per = losses.squared_error(flat, targets.drifting_target(flat, v.reshape(-1, c)).detach(), losses.Reduce.MEAN)
    return per.reshape(*lead, n), lambdas
