"""Interpolants (probability paths) z_t = a(t) x + b(t) eps, with t in [0, 1], t = 0 data, t = 1 noise.

Each path is a frozen dataclass giving a(t), b(t) and their time derivatives a'(t), b'(t). The free
functions below work with any of them:

    z_t = a x + b eps,        v = dz_t/dt = a' x + b' eps          (conditional velocity)
    x   = (b' z - b v) / (a b' - b a'),   eps = (a v - a' z) / (a b' - b a')
    eps = (z - a x) / b,      x = (z - b eps) / a,      score = grad log p_t(z | x) = -eps / b

Paths:
- ``LinearPath``: a = 1 - t, b = t (rectified flow / conditional OT; Liu et al. 2023, Lipman et al. 2023).
- ``CosinePath``: a = cos(pi t / 2), b = sin(pi t / 2) (TrigFlow, Lu & Song 2025, with angle pi t / 2).
- ``VPPath``: variance preserving, a = exp(-B(t)/2), b = sqrt(1 - a^2), B(t) = beta_min t + (beta_max - beta_min) t^2 / 2
  (Song et al. 2021, the linear-beta VP-SDE; the EDM noise level is sigma = b / a).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class Path(Protocol):
    def a(self, t: Tensor) -> Tensor: ...
    def b(self, t: Tensor) -> Tensor: ...
    def da(self, t: Tensor) -> Tensor: ...
    def db(self, t: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class LinearPath:
    """z_t = (1 - t) x + t eps, v = eps - x."""

    def a(self, t: Tensor) -> Tensor:
        return 1 - t

    def b(self, t: Tensor) -> Tensor:
        return t

    def da(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def db(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


@dataclass(frozen=True)
class CosinePath:
    """z_t = cos(pi t / 2) x + sin(pi t / 2) eps (TrigFlow with its angle rescaled to [0, 1])."""

    def a(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def b(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def da(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def db(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)


@dataclass(frozen=True)
class VPPath:
    """Variance-preserving path with a linear beta schedule: a = exp(-B(t)/2), b = sqrt(1 - a^2)."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def _big_b(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def a(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self._big_b(t))

    def b(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(-self._big_b(t)))

    def da(self, t: Tensor) -> Tensor:
        return -0.5 * self._beta(t) * self.a(t)

    def db(self, t: Tensor) -> Tensor:
        # d/dt sqrt(1 - e^{-B}) = beta e^{-B} / (2 b)
        return 0.5 * self._beta(t) * torch.exp(-self._big_b(t)) / self.b(t)


def expand_time(t: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample times (B,) to broadcast against ``like`` of shape (B, ...)."""
    if t.dim() != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"times must have shape (B,) = ({like.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(t.shape[0], *([1] * (like.dim() - 1)))


def _coefficients(path: Path, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    te = expand_time(t, like)
    return path.a(te), path.b(te), path.da(te), path.db(te)


def sample_path(path: Path, x: Tensor, eps: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Return (z_t, v) with z_t = a(t) x + b(t) eps and the conditional velocity v = a'(t) x + b'(t) eps."""
    if x.shape != eps.shape:
        raise ValueError(f"x and eps must have the same shape, got {tuple(x.shape)} and {tuple(eps.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("the data batch x contains NaN or inf")
    a, b, da, db = _coefficients(path, t, x)
    return a * x + b * eps, da * x + db * eps


def eps_from_x(path: Path, z: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """eps = (z - a x) / b."""
    a, b, _, _ = _coefficients(path, t, z)
    return (z - a * x) / b


def x_from_eps(path: Path, z: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x = (z - b eps) / a."""
    a, b, _, _ = _coefficients(path, t, z)
    return (z - b * eps) / a


def v_from_x(path: Path, z: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """v = a' x + b' eps with eps = (z - a x) / b; on the linear path v = (z - x) / t."""
    a, b, da, db = _coefficients(path, t, z)
    return da * x + db * (z - a * x) / b


def v_from_eps(path: Path, z: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """v = a' x + b' eps with x = (z - b eps) / a."""
    a, b, da, db = _coefficients(path, t, z)
    return da * (z - b * eps) / a + db * eps


def x_from_v(path: Path, z: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """Solve z = a x + b eps, v = a' x + b' eps for x: x = (b' z - b v) / (a b' - b a')."""
    a, b, da, db = _coefficients(path, t, z)
    return (db * z - b * v) / (a * db - b * da)


def eps_from_v(path: Path, z: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """eps = (a v - a' z) / (a b' - b a')."""
    a, b, da, db = _coefficients(path, t, z)
    return (a * v - da * z) / (a * db - b * da)


def score_from_eps(path: Path, eps: Tensor, t: Tensor) -> Tensor:
    """grad_z log p_t(z) = -E[eps | z] / b(t)."""
    return -eps / path.b(expand_time(t, eps))


def eps_from_score(path: Path, score: Tensor, t: Tensor) -> Tensor:
    """E[eps | z] = -b(t) score."""
    return -path.b(expand_time(t, score)) * score


def linear_point_of_trigflow(z: Tensor, t: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
    """The linear-path point holding the same (x, eps) as a TrigFlow point (Lu & Song 2024, arXiv 2410.11081).

    TrigFlow's x_theta = cos(theta) x + sin(theta) sigma_d eps is sigma_d z, z the ``CosinePath`` point of
    x / sigma_d at t = 2 theta / pi. Dividing by cos(theta) + sigma_d sin(theta):
    z_lin = sigma_d z / (cos + sigma_d sin) = (1 - t_lin) x + t_lin eps with t_lin = sigma_d sin / (cos + sigma_d sin).
    Returns (z_lin, t_lin), to query a linear-path (flow matching) teacher at a TrigFlow point."""
    if sigma_data <= 0:
        raise ValueError(f"sigma_data must be positive, got {sigma_data}")
    theta = 0.5 * math.pi * t
    cos, sin = torch.cos(theta), sigma_data * torch.sin(theta)
    return sigma_data * z / expand_time(cos + sin, z), (sin / (cos + sin)).clamp(0.0, 1.0)


def trigflow_velocity_of_linear_model(v_lin: Callable[[Tensor, Tensor], Tensor], z: Tensor, t: Tensor, sigma_data: float) -> Tensor:
    """TrigFlow's velocity dz/dtheta at the TrigFlow point (z, t) of a linear-path velocity model v_lin(z_lin, t_lin):
    query it at ``linear_point_of_trigflow`` and convert with ``trigflow_velocity_from_linear``. This reads an FM
    network as a TrigFlow network F (the wrapping of NVlabs' rCM, which distils a rectified-flow model with sCD
    starting from the teacher's own weights); differentiable in z and t, so a JVP of F passes through it."""
    z_lin, t_lin = linear_point_of_trigflow(z, t, sigma_data)
    return trigflow_velocity_from_linear(v_lin(z_lin, t_lin), z_lin, t_lin, t, sigma_data)


def trigflow_velocity_from_linear(v_lin: Tensor, z_lin: Tensor, t_lin: Tensor, t: Tensor, sigma_data: float) -> Tensor:
    """A linear-path velocity v(z_lin, t_lin) (at ``linear_point_of_trigflow``) as TrigFlow's velocity in
    ``CosinePath`` units of x / sigma_d: x_hat = z_lin - t_lin v, eps_hat = z_lin + (1 - t_lin) v, and
    dz/dtheta = cos(theta) eps_hat - sin(theta) x_hat / sigma_d, theta = pi t / 2 (sCM's distillation
    target dx_theta/dtheta = sigma_d F_teacher, divided by sigma_d)."""
    if sigma_data <= 0:
        raise ValueError(f"sigma_data must be positive, got {sigma_data}")
    tl = expand_time(t_lin, z_lin)
    theta = expand_time(0.5 * math.pi * t, z_lin)
    x_hat, eps_hat = z_lin - tl * v_lin, z_lin + (1 - tl) * v_lin
    return torch.cos(theta) * eps_hat - torch.sin(theta) * x_hat / sigma_data
