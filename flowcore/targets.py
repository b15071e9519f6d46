"""Regression targets, one function per identity, named after the math (flowcore convention: flow map
F(z_t, t, s) with s <= t and z_s = z_t + (s - t) F; F(z, t, t) is the instantaneous velocity).

Targets are returned without ``detach``: the caller decides what is stop-gradded (the papers detach
all of these, and ``flowcore.losses`` functions take the detached target).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowcore.interpolants import expand_time
from flowcore.times import check_times


def flow_matching_target(v: Tensor) -> Tensor:
    """Flow matching regresses the conditional velocity: L = ||v_theta(z_t, t) - v||^2, v = a' x + b' eps
    (Lipman et al. 2023; on the linear path v = eps - x)."""
    return v


def meanflow_target(v: Tensor, t: Tensor, s: Tensor, du_dt: Tensor) -> Tensor:
    """MeanFlow identity (Geng et al. 2025, eq. 6): u(z_t, t, s) = v(z_t, t) - (t - s) du/dt, where
    du/dt = J_u (v, 1, 0) is the total derivative along the trajectory with s held fixed."""
    check_times(t, s, batch=v.shape[0])
    return v - expand_time(t - s, du_dt) * du_dt


def compound_velocity(u: Tensor, du_dt: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """improved MeanFlow's compound function (Geng et al. 2025b, iMF): V = u + (t - s) sg(du/dt).
    By the MeanFlow identity V equals the instantaneous velocity, so iMF regresses V onto a velocity
    target with gradient only through u."""
    check_times(t, s, batch=u.shape[0])
    return u + expand_time(t - s, u) * du_dt.detach()


def flow_map_step(z: Tensor, average_velocity: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """z_s = z_t + (s - t) u(z_t, t, s)."""
    return z + expand_time(s - t, z) * average_velocity


def velocity_from_x_prediction(z: Tensor, x_hat: Tensor, t: Tensor, t_floor: float = 0.05) -> Tensor:
    """Pixel MeanFlow's x-prediction (Lu et al. 2026, pMF): u = (z_t - x_hat) / clip(t, t_floor, 1).

    On the linear path this is the velocity implied by the denoised estimate x_hat; the clip keeps
    the division stable near t = 0 (and its t-derivative is zero below the floor)."""
    return (z - x_hat) / expand_time(t.clamp(min=t_floor, max=1.0), z)
