"""Closed-form Gaussian flow (DESIGN.md): data N(0, s^2 I) on the linear path z_t = (1 - t) x + t eps.

sigma_t^2 = (1 - t)^2 s^2 + t^2,  v(z, t) = z (t - (1 - t) s^2) / sigma_t^2,  z_s = z_t sigma_s / sigma_t,
u(z, t, s) = z (1 - sigma_s / sigma_t) / (t - s)  (the average velocity; u(z, t, t) = v(z, t)).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _col(t: Tensor, z: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (z.dim() - 1)))


def sigma(t: Tensor, s2: float) -> Tensor:
    return torch.sqrt((1 - t) ** 2 * s2 + t**2)


def velocity(z: Tensor, t: Tensor, s2: float) -> Tensor:
    return z * _col((t - (1 - t) * s2) / sigma(t, s2) ** 2, z)


def flow_map(z: Tensor, t: Tensor, s: Tensor, s2: float) -> Tensor:
    return z * _col(sigma(s, s2) / sigma(t, s2), z)


def average_velocity(z: Tensor, t: Tensor, s: Tensor, s2: float) -> Tensor:
    """u = (z_t - z_s) / (t - s), and v where s = t."""
    gap = t - s
    safe = torch.where(gap == 0, torch.ones_like(gap), gap)
    u = z * _col((1 - sigma(s, s2) / sigma(t, s2)) / safe, z)
    return torch.where(_col(gap == 0, z), velocity(z, t, s2), u)
