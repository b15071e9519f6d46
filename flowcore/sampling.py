"""Samplers, from noise at t = 1 to data at t = 0.

- ``euler`` / ``heun``: ODE solvers for a velocity field v(z, t) on a time grid 1 = t_0 > ... > t_N = 0
  (Heun: second-order trapezoidal correction, skipped on the last step into t = 0 as in EDM).
- ``flow_map_sample``: k-step flow-map sampling on any grid, z_{t_{i+1}} = z_{t_i} + (t_{i+1} - t_i) F(z, t_i, t_{i+1})
  (MeanFlow/TVM/AlphaFlow "trajectory" sampling; one step is F(eps, 1, 0)).
- ``reflow_pairs``: the (x, eps) coupling of a flow, x = ODE(eps), for rectified flow's reflow and
  one-step distillation.

Fields are called with per-sample time tensors of shape (B,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowcore.interpolants import Path, expand_time, sample_path

VelocityField = Callable[[Tensor, Tensor], Tensor]
FlowMap = Callable[[Tensor, Tensor, Tensor], Tensor]


def _check_grid(times: Tensor) -> None:
    if times.dim() != 1 or times.numel() < 2:
        raise ValueError(f"a time grid needs at least two points, got shape {tuple(times.shape)}")
    if not bool((times[1:] < times[:-1]).all()):
        raise ValueError("the time grid must decrease strictly (sampling runs from t = 1 to t = 0)")
    if times.min() < 0 or times.max() > 1:
        raise ValueError("the time grid must lie in [0, 1]")


def _full(z: Tensor, value: Tensor) -> Tensor:
    return value.to(z.dtype).expand(z.shape[0]).clone()


@torch.no_grad()
def euler(field: VelocityField, z: Tensor, times: Tensor) -> Tensor:
    """z <- z + (t_{i+1} - t_i) v(z, t_i)."""
    _check_grid(times)
    for t, s in zip(times[:-1], times[1:]):
        z = z + (s - t).to(z.dtype) * field(z, _full(z, t))
    return z


@torch.no_grad()
def heun(field: VelocityField, z: Tensor, times: Tensor) -> Tensor:
    """Heun's method: predictor v0 = v(z, t), z' = z + h v0, corrector z + h (v0 + v(z', s)) / 2."""
    _check_grid(times)
    for t, s in zip(times[:-1], times[1:]):
        h = (s - t).to(z.dtype)
        v0 = field(z, _full(z, t))
        z_pred = z + h * v0
        z = z_pred if s == 0 else z + 0.5 * h * (v0 + field(z_pred, _full(z, s)))
    return z


@torch.no_grad()
def flow_map_sample(flow_map: FlowMap, z: Tensor, times: Tensor) -> Tensor:
    """z <- z + (s - t) F(z, t, s) for consecutive (t, s) of the grid."""
    _check_grid(times)
    for t, s in zip(times[:-1], times[1:]):
        tt, ss = _full(z, t), _full(z, s)
        z = z + expand_time(ss - tt, z) * flow_map(z, tt, ss)
    return z


def velocity_of(flow_map: FlowMap) -> VelocityField:
    """The instantaneous velocity v(z, t) = F(z, t, t) of a flow map, for the ODE solvers."""
    return lambda z, t: flow_map(z, t, t)


Solver = Callable[[VelocityField, Tensor, Tensor], Tensor]


@torch.no_grad()
def reflow_pairs(field: VelocityField, eps: Tensor, times: Tensor, solver: Solver = heun) -> tuple[Tensor, Tensor]:
    """The coupling of a flow, (x, eps) with x = ODE_{1 -> 0}(eps) (rectified flow's "reflow", Liu,
    Gong & Liu 2022, arXiv 2209.03003, Alg. 1).

    The next rectified flow is trained by flow matching on these pairs kept together,
    z_t = (1 - t) x + t eps with target eps - x, and a one-step model regresses F(eps, 1, 0) onto the
    same eps - x. ``solver`` (default ``heun``) integrates ``field`` on ``times`` (1 -> 0); the
    returned x is detached, eps is returned unchanged."""
    if not eps.is_floating_point():
        raise ValueError(f"eps must be a float tensor, got {eps.dtype}")
    x = solver(field, eps, times)
    if not torch.isfinite(x).all():
        raise FloatingPointError("reflow_pairs: the ODE solution is not finite")
    return x.detach(), eps


def heun_step(field: VelocityField, z: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """One Heun step from t to s with per-sample times (B,): z' = z + (s - t) v(z, t),
    z_s = z + (s - t) (v(z, t) + v(z', s)) / 2 (the consistency-distillation teacher step, Song et al.
    2023, arXiv 2303.01469). Not under no_grad: the caller decides."""
    if t.shape != (z.shape[0],) or s.shape != t.shape:
        raise ValueError(f"heun_step needs per-sample times of shape ({z.shape[0]},), got {tuple(t.shape)} and {tuple(s.shape)}")
    h = expand_time(s - t, z).to(z.dtype)
    v0 = field(z, t)
    return z + 0.5 * h * (v0 + field(z + h * v0, s))


def consistency_times(steps: int, t_max: float = 1.0, t_mid: float = 0.5) -> Tensor:
    """Evaluation times of k-step consistency sampling: t_max, then k - 1 times evenly spaced from
    t_mid down towards 0 (t_mid, ..., t_mid / (k - 1)). Shape (steps,), decreasing."""
    if steps < 1 or not 0.0 < t_mid < t_max <= 1.0:
        raise ValueError(f"consistency_times needs steps >= 1 and 0 < t_mid < t_max <= 1, got {steps}, {t_mid}, {t_max}")
    return torch.cat([torch.tensor([t_max]), torch.linspace(t_mid, 0.0, steps)[:-1]])


@torch.no_grad()
def consistency_sample(denoise: VelocityField, eps: Tensor, times: Tensor, path: Path,
                       generator: torch.Generator | None = None) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, arXiv 2303.01469, Alg. 1): start at
    z = b(t_0) eps (pure noise at t_0 = 1; EDM's x = sigma_max eps on the linear path at t_0 < 1), then for
    each time: x = denoise(z, t_i) (the consistency map to the data end), and re-noise to the next
    time on ``path``, z = a(t_{i+1}) x + b(t_{i+1}) eps_i with fresh noise from ``generator``. k times = k NFE.
    (EDM re-noises with sqrt(sigma^2 - sigma_min^2); the sigma_min^2 ~ 4e-6 is dropped.)"""
    if times.dim() != 1 or times.numel() < 1 or not bool((times[1:] < times[:-1]).all()):
        raise ValueError("consistency sampling times must be a non-empty, strictly decreasing 1-D tensor")
    if times.min() <= 0 or times.max() > 1:
        raise ValueError("consistency sampling times must lie in (0, 1]")
    z = path.b(times[0]).to(eps.dtype) * eps
    for i, t in enumerate(times):
        x = denoise(z, _full(z, t))
        if i + 1 < times.numel():
            fresh = torch.randn(eps.shape, generator=generator, dtype=eps.dtype).to(eps.device)
            z, _ = sample_path(path, x, fresh, _full(z, times[i + 1]))
    return x
