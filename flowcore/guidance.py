"""Classifier-free guidance (Ho & Salimans 2022) in training targets and in sampling.

- ``drop_labels``: replace a fraction p of labels by the null class (CFG training), optionally on given rows only.
- ``cfg_combine``: v_w = v_u + w (v_c - v_u), the guided field at sampling time.
- ``meanflow_guided_velocity``: MeanFlow's training-time guided target (Geng et al. 2025, eq. 13-15)
  v_g = omega v + kappa u(z, t, t | y) + (1 - omega - kappa) u(z, t, t | null); with kappa = 0 this is
  v_u + omega (v - v_u), whose fixed point is the CFG field of scale omega / (1 - kappa).
- ``imf_guided_velocity``: improved MeanFlow's target from the model's own velocity head
  v_g = v + (1 - 1/omega)(v_c - v_u) (fixed point: v_u + omega (v_c - v_u)); omega is a model input.
- ``guidance_feature``: the scale as a network input, 1 - 1/omega in [0, 1) (iMF).
- ``guided``: wrap a conditional network into its CFG field for samplers, one doubled batch per call.
- ``guided_in_interval``: the same with the scale applied only for t in a guidance interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from flowcore.interpolants import expand_time


def drop_labels(y: Tensor, p: float, null_class: int, generator: torch.Generator | None = None,
                among: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Return (labels with a fraction p set to ``null_class``, boolean mask of the dropped rows).

    ``among``: a boolean (B,) mask of the rows that may be dropped. The official MeanFlow and iMF code drop the
    first N ~ Binomial(B, p) rows of a batch whose first rows are its r = t rows, so in practice only r = t rows
    lose their label; with ``among`` a count N ~ Binomial(B, p), capped at the number of eligible rows, is
    dropped from those rows, chosen uniformly. Without it every row is dropped independently with probability p.
    """
    if y.dtype != torch.int64 or y.dim() != 1:
        raise ValueError(f"class labels must be an int64 tensor of shape (B,), got {y.dtype} {tuple(y.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"label drop probability must be in [0, 1], got {p}")
    coin = torch.rand(y.shape[0], generator=generator) < p
    if among is None:
        dropped = coin
    else:
        if among.dtype != torch.bool or among.shape != y.shape:
            raise ValueError(f"among must be a boolean mask of shape {tuple(y.shape)}, got {among.dtype} {tuple(among.shape)}")
        eligible = among.nonzero().squeeze(1)
        chosen = eligible[torch.randperm(eligible.numel(), generator=generator)[:int(coin.sum())]]
        dropped = torch.zeros_like(among).index_fill_(0, chosen, True)
    return torch.where(dropped, torch.full_like(y, null_class), y), dropped


def cfg_combine(v_cond: Tensor, v_uncond: Tensor, w: Tensor | float) -> Tensor:
    """v_u + w (v_c - v_u); w is a float or per-sample (B,)."""
    w = expand_time(w, v_cond) if isinstance(w, Tensor) else w
    return v_uncond + w * (v_cond - v_uncond)


def within_interval(t: Tensor, t_min: Tensor | float, t_max: Tensor | float) -> Tensor:
    """Boolean mask t_min <= t <= t_max (guidance interval, Kynkaanniemi et al. 2024)."""
    return (t >= t_min) & (t <= t_max)


def meanflow_guided_velocity(v: Tensor, u_cond: Tensor, u_uncond: Tensor, omega: float, kappa: float = 0.0) -> Tensor:
    """omega v + kappa u_c + (1 - omega - kappa) u_u, with u_c, u_u the model at (z, t, t) (detached)."""
    if not 0.0 <= kappa < 1.0:
        raise ValueError(f"kappa must be in [0, 1), got {kappa}")
    return omega * v + kappa * u_cond.detach() + (1.0 - omega - kappa) * u_uncond.detach()


def imf_guided_velocity(v: Tensor, v_cond: Tensor, v_uncond: Tensor, omega: Tensor) -> Tensor:
    """v + (1 - 1/omega)(v_c - v_u), omega (B,) >= 1; v_c, v_u from the model's velocity head (detached)."""
    if (omega < 1).any():
        raise ValueError("guidance scale omega must be >= 1")
    return v + expand_time(1.0 - 1.0 / omega, v) * (v_cond.detach() - v_uncond.detach())


def guidance_feature(omega: Tensor) -> Tensor:
    """Network input for the guidance scale: 1 - 1/omega (0 at omega = 1, -> 1 as omega -> inf)."""
    return 1.0 - 1.0 / omega


def sample_guidance_scale(n: int, omega_max: float, generator: torch.Generator | None = None) -> Tensor:
    """omega log-uniform on [1, omega_max] (iMF samples the scale so one model serves every omega)."""
    if omega_max < 1:
        raise ValueError(f"omega_max must be >= 1, got {omega_max}")
    return torch.exp(math.log(omega_max) * torch.rand(n, generator=generator))


def sample_guidance_interval(whole: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """iMF's training guidance interval (official ``sample_cfg_interval``): t_min ~ U[0, 0.5], t_max ~ U[0.5, 1],
    and [0, 1] on the rows where ``whole`` (bool (B,); iMF: the s = t rows). Both draws are made on every row."""
    if whole.dim() != 1 or whole.dtype != torch.bool:
        raise ValueError(f"whole must be a bool tensor of shape (B,), got {whole.dtype} {tuple(whole.shape)}")
    n = whole.shape[0]
    t_min = 0.5 * torch.rand(n, generator=generator)
    t_max = 0.5 + 0.5 * torch.rand(n, generator=generator)
    return torch.where(whole, torch.zeros(n), t_min), torch.where(whole, torch.ones(n), t_max)


def guided(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], y: Tensor, w: float, null_class: int) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """CFG for sampling: (z, t, s) -> fn_u + w (fn_c - fn_u), fn(z, t, s, y) evaluated once on a
    doubled batch. w = 1 skips the unconditional half."""
    if w == 1.0:
        return lambda z, t, s: fn(z, t, s, y)

    def field(z: Tensor, t: Tensor, s: Tensor) -> Tensor:
        both = fn(torch.cat([z, z]), torch.cat([t, t]), torch.cat([s, s]), torch.cat([y, torch.full_like(y, null_class)]))
        cond, uncond = both.chunk(2)
        return cfg_combine(cond, uncond, w)

    return field


def guided_in_interval(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], y: Tensor, w: float, null_class: int,
                       t_min: float, t_max: float) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """CFG applied only inside a guidance interval (Kynkaanniemi et al. 2024, arXiv 2404.07724; JiT,
    Li & He 2025, arXiv 2511.13720): (z, t, s) -> fn_u + w_i (fn_c - fn_u) with w_i = w where
    t_min <= t_i <= t_max and w_i = 1 (the conditional output) elsewhere, fn(z, t, s, y) evaluated
    on one doubled batch. [0, 1] reproduces ``guided``; an empty interval (t_min > every t) gives the
    conditional field. Times are flowcore's (t = 1 noise): JiT's interval [0.1, 1] on its time
    (data at 1) is [0, 0.9] here."""
    if not (0.0 <= t_min <= 1.0 and 0.0 <= t_max <= 1.0):
        raise ValueError(f"guidance interval must lie in [0, 1], got [{t_min}, {t_max}]")
    if w == 1.0:
        return lambda z, t, s: fn(z, t, s, y)

    def field(z: Tensor, t: Tensor, s: Tensor) -> Tensor:
        both = fn(torch.cat([z, z]), torch.cat([t, t]), torch.cat([s, s]), torch.cat([y, torch.full_like(y, null_class)]))
        cond, uncond = both.chunk(2)
        scale = torch.where(within_interval(t, t_min, t_max), torch.full_like(t, w), torch.ones_like(t))
        return cfg_combine(cond, uncond, scale)

    return field


def meanflow_training_velocity(
    velocity: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], z: Tensor, t: Tensor, v: Tensor, y: Tensor,
    dropped: Tensor, null_class: int, omega: float, kappa: float,
) -> Tensor:
    """MeanFlow's training-time CFG velocity from the network's own instantaneous velocities (no gradient):

        v_g = omega v + kappa u(z, t, t | y) + (1 - omega - kappa) u(z, t, t | null),   v_g = v on dropped rows

    (Geng et al. 2025, arXiv 2505.13447; ``meanflow_guided_velocity``). ``velocity(z, t, s, y)`` is the
    flow-map network; ``dropped`` (B,) bool marks the rows whose label was dropped to ``null_class``.
    Without guidance (omega = 1, kappa = 0) v_g = v and the network is not evaluated.
    """
    if dropped.shape != (v.shape[0],) or dropped.dtype != torch.bool:
        raise ValueError(f"dropped must be a (B,) bool tensor with B = {v.shape[0]}, got {tuple(dropped.shape)} {dropped.dtype}")
    if omega == 1.0 and kappa == 0.0:
        return v
    with torch.no_grad():
        both = velocity(torch.cat([z, z]), torch.cat([t, t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_class)]))
    u_cond, u_uncond = both.chunk(2)
    return torch.where(expand_time(dropped, v), v, meanflow_guided_velocity(v, u_cond, u_uncond, omega, kappa))
