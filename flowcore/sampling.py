"""Samplers, from noise at t = 1 to data at t = 0.

- ``euler`` / ``heun``: ODE solvers for a velocity field v(z, t) on a time grid 1 = t_0 > ... > t_N = 0
  (Heun: second-order trapezoidal correction, skipped on the last step into t = 0 as in EDM).
- ``flow_map_sample``: k-step flow-map sampling on any grid, z_{t_{i+1}} = z_{t_i} + (t_{i+1} - t_i) F(z, t_i, t_{i+1})
  (MeanFlow/TVM/AlphaFlow "trajectory" sampling; one step is F(eps, 1, 0)).

Fields are called with per-sample time tensors of shape (B,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowcore.interpolants import expand_time

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
