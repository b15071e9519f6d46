"""Embedded data: 2D toys, Gaussian mixtures with an exact flow, and the 8x8 digits.

Nothing here downloads anything. Conventions (see DESIGN.md): t = 0 is data, t = 1 is noise, the
linear path is z_t = (1 - t) x + t eps with eps ~ N(0, I), and times are per-sample tensors of
shape (B,).

2D toys (``Toy2D``), each ``f(n, generator=None) -> Tensor (n, 2)`` float32, all of roughly unit scale:

- ``checkerboard``: uniform on the 8 dark squares of a 4 x 4 board of unit squares covering
  [-2, 2]^2 (square (col, row) is dark when col + row is even); mean 0, variance 4/3 per coordinate.
- ``eight_gaussians``: ``ring_mixture()``, 8 equal-weight isotropic Gaussians of std 0.1 whose
  means sit on the circle of radius sqrt(2); variance 1.01 per coordinate. Its flow is exact.
- ``moons``: two interleaved half circles of radius 1, (cos a, sin a) and (1 - cos a, 1/2 - sin a)
  with a ~ U[0, pi], centred by (-1/2, -1/4), plus N(0, 0.05^2) noise; variances 0.75 and 0.25.
- ``spirals``: two arms r (cos(a + j pi), sin(a + j pi)), j in {0, 1}, with a = 3 pi sqrt(u),
  r = 2 sqrt(u), u ~ U[0, 1] (uniform density along the arc), plus N(0, 0.05^2) noise;
  variance about 1 per coordinate.

Gaussian mixtures (``GaussianMixture``) give the exact marginal density, velocity, posterior
p(x | z_t) and flow map of the linear path, so they serve as teachers and oracles in tests.

Digits: ``load_digits()`` returns the 1797 UCI 8x8 handwritten digits (third_party/digits) scaled to
[-1, 1]; ``digits_halves()`` and ``digits_train_heldout()`` are fixed stratified splits.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import importlib.resources
import math

import numpy as np
import torch
from torch import Tensor

# ----------------------------------------------------------------------------------------------
# argument checks


def _check_n(n: int, name: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _check_points(z: Tensor, dim: int, name: str = "z") -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {z.dtype}")
    if z.ndim != 2 or z.shape[1] != dim:
        raise ValueError(f"{name} must have shape (B, {dim}), got {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_time(t: Tensor, batch: int, name: str = "t") -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor of shape (B,), got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one time per sample), got {tuple(t.shape)}")
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"{name} must lie in [0, 1], got values in [{t.min().item()}, {t.max().item()}]")


# ----------------------------------------------------------------------------------------------
# 2D toys


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the dark squares (col + row even) of a 4 x 4 board of unit squares on [-2, 2]^2."""
    _check_n(n)
    _check_generator(generator)
    x1 = 4 * torch.rand(n, generator=generator, dtype=torch.float64) - 2
    col = torch.floor(x1 + 2).clamp(0, 3)
    row = 2 * torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) + (col % 2)
    x2 = row - 2 + torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.stack([x1, x2], dim=1).float()


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Samples of ``ring_mixture()``: 8 Gaussians of std 0.1 on the circle of radius sqrt(2)."""
    return ring_mixture().sample(n, generator)[0].float()


def moons(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved half circles (cos a, sin a), (1 - cos a, 1/2 - sin a), a ~ U[0, pi],
    centred by (-1/2, -1/4), plus N(0, 0.05^2) noise; each point picks a moon with probability 1/2."""
    _check_n(n)
    _check_generator(generator)
    a = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    lower = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64)
    x1 = torch.cos(a) * (1 - 2 * lower) + lower - 0.5
    x2 = torch.sin(a) * (1 - 2 * lower) + 0.5 * lower - 0.25
    noise = 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (torch.stack([x1, x2], dim=1) + noise).float()


def spirals(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Two spiral arms r (cos(a + j pi), sin(a + j pi)), a = 3 pi sqrt(u), r = 2 sqrt(u), u ~ U[0, 1],
    j ~ U{0, 1}, plus N(0, 0.05^2) noise."""
    _check_n(n)
    _check_generator(generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64).sqrt()
    arm = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64)
    a = 3 * math.pi * u + math.pi * arm
    r = 2 * u
    noise = 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=1) + noise).float()


class Toy2D(enum.Enum):
    """Names of the 2D toys, for argparse: ``type=Toy2D, choices=list(Toy2D)``."""

    CHECKERBOARD = "checkerboard"
    EIGHT_GAUSSIANS = "eight_gaussians"
    MOONS = "moons"
    SPIRALS = "spirals"

    def __str__(self) -> str:
        return self.value

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples (n, 2) float32 of this toy."""
        return _TOYS[self](n, generator)


_TOYS = {
    Toy2D.CHECKERBOARD: checkerboard,
    Toy2D.EIGHT_GAUSSIANS: eight_gaussians,
    Toy2D.MOONS: moons,
    Toy2D.SPIRALS: spirals,
}


# ----------------------------------------------------------------------------------------------
# Gaussian mixtures on the linear path


@dataclasses.dataclass(frozen=True, eq=False)
class MixturePosterior:
    """p(x | z_t = z) for a batch of points: a Gaussian mixture per point.

    weights (B, K), means (B, K, d), covs (B, K, d, d), all float64.
    """

    weights: Tensor
    means: Tensor
    covs: Tensor

    def mean(self) -> Tensor:
        """E[x | z_t] = sum_k w_k m_k, shape (B, d)."""
        return torch.einsum("bk,bki->bi", self.weights, self.means)

    def covariance(self) -> Tensor:
        """Cov[x | z_t] = sum_k w_k (P_k + m_k m_k^T) - E[x|z] E[x|z]^T (law of total variance), (B, d, d)."""
        second = torch.einsum("bk,bkij->bij", self.weights, self.covs + self.means[..., :, None] * self.means[..., None, :])
        m = self.mean()
        return second - m[:, :, None] * m[:, None, :]


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Data x ~ sum_k w_k N(mu_k, Sigma_k) on the linear path z_t = (1 - t) x + t eps, eps ~ N(0, I).

    Fields: ``weights`` (K,) positive (normalised on construction), ``means`` (K, d), ``covs``
    (K, d, d) symmetric positive definite, ``classes`` (K,) int64 class label of each component
    (default: component k has class k). Everything is stored and computed in float64; results are
    returned in the dtype of the query points ``z`` (samples in float64).

    With a = 1 - t, b = t and component k fixed, z_t | k ~ N(a mu_k, C_k) with
    C_k = a^2 Sigma_k + b^2 I. Writing Sigma_k = U_k diag(lam_k) U_k^T (computed once), every matrix
    below is diagonal in the basis U_k, so C_k has eigenvalues c = a^2 lam + b^2 and nothing is
    inverted numerically. The posterior responsibilities are r_k(z) ∝ w_k N(z; a mu_k, C_k), and

        log p_t(z)      = logsumexp_k [log w_k + log N(z; a mu_k, C_k)]
        E[x | z, k]     = mu_k + a Sigma_k C_k^{-1} (z - a mu_k)
        Cov[x | z, k]   = Sigma_k - a^2 Sigma_k C_k^{-1} Sigma_k = b^2 Sigma_k C_k^{-1}
        E[eps | z, k]   = b C_k^{-1} (z - a mu_k)
        v(z, t)         = E[eps - x | z_t = z] = sum_k r_k [(b I - a Sigma_k) C_k^{-1} (z - a mu_k) - mu_k]

    (for t > 0 this equals (z - E[x | z]) / t). Edge cases: at t = 0, C_k = Sigma_k, the posterior
    is a point mass at z (zero covariance, mean z) and v(z, 0) = -z; at t = 1, C_k = I, the
    posterior is the prior and v(z, 1) = z - E[x]. All formulas are finite on the closed interval
    [0, 1] because every Sigma_k is positive definite.

    Class conditioning: every method takes an optional ``y`` (B,) int64; then only the components
    with ``classes == y[i]`` count for point i (the mixture conditioned on the class).
    """

    weights: Tensor
    means: Tensor
    covs: Tensor
    classes: Tensor | None = None
    _eigvals: Tensor = dataclasses.field(init=False, repr=False, compare=False)
    _eigvecs: Tensor = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("weights", "means", "covs"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"{name} must be a floating-point Tensor, got {type(value).__name__}")
        if self.weights.ndim != 1:
            raise ValueError(f"weights must have shape (K,), got {tuple(self.weights.shape)}")
        k = self.weights.shape[0]
        if self.means.ndim != 2 or self.means.shape[0] != k:
            raise ValueError(f"means must have shape ({k}, d), got {tuple(self.means.shape)}")
        d = self.means.shape[1]
        if self.covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}), got {tuple(self.covs.shape)}")
        if not (torch.isfinite(self.weights).all() and (self.weights > 0).all()):
            raise ValueError("weights must be finite and positive")
        if not (torch.isfinite(self.means).all() and torch.isfinite(self.covs).all()):
            raise ValueError("means and covs must be finite")
        covs = self.covs.double()
        if not torch.allclose(covs, covs.mT, rtol=1e-10, atol=1e-12):
            raise ValueError("covs must be symmetric")
        eigvals, eigvecs = torch.linalg.eigh(covs)
        if (eigvals <= 0).any():
            raise ValueError(f"covs must be positive definite, smallest eigenvalue {eigvals.min().item():.3g}")
        classes = torch.arange(k) if self.classes is None else self.classes
        if not isinstance(classes, Tensor) or classes.dtype != torch.int64 or classes.shape != (k,):
            raise ValueError(f"classes must be an int64 Tensor of shape ({k},)")
        object.__setattr__(self, "weights", self.weights.double() / self.weights.double().sum())
        object.__setattr__(self, "means", self.means.double())
        object.__setattr__(self, "covs", covs)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "_eigvals", eigvals)
        object.__setattr__(self, "_eigvecs", eigvecs)

    @classmethod
    def isotropic(cls, weights: Tensor, means: Tensor, stds: Tensor, classes: Tensor | None = None) -> GaussianMixture:
        """Components N(mu_k, std_k^2 I); ``stds`` has shape (K,)."""
        if not isinstance(means, Tensor) or means.ndim != 2:
            raise ValueError("means must be a Tensor of shape (K, d)")
        if not isinstance(stds, Tensor) or stds.shape != (means.shape[0],):
            raise ValueError(f"stds must be a Tensor of shape ({means.shape[0]},)")
        eye = torch.eye(means.shape[1], dtype=torch.float64)
        return cls(weights, means, stds.double()[:, None, None] ** 2 * eye, classes)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def root_mean_square(self) -> float:
        """sqrt(E||x||^2 / d) = sqrt(sum_k w_k (||mu_k||^2 + tr Sigma_k) / d): the sigma_data of a zero-mean
        Gaussian prior with the mixture's second moment (EDM's preconditioning constant)."""
        second = (self.weights * (self.means.square().sum(1) + self.covs.diagonal(dim1=1, dim2=2).sum(1))).sum()
        return float((second / self.dim).sqrt())

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """n draws x (n, d) float64 and their component indices (n,) int64.

        With ``y`` (n,) int64, point i is drawn from the mixture restricted to class y[i]."""
        _check_n(n)
        _check_generator(generator)
        log_w = self.weights.log().expand(n, -1)
        if y is not None:
            log_w = log_w + self._log_class_mask(y, n)
        component = torch.multinomial(log_w.exp(), 1, replacement=True, generator=generator)[:, 0]
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        root = self._eigvecs[component] * self._eigvals[component].sqrt()[:, None, :]  # U diag(sqrt lam)
        return self.means[component] + torch.einsum("bij,bj->bi", root, noise), component

    # -- exact marginal quantities --------------------------------------------------------------

    def _log_class_mask(self, y: Tensor, batch: int) -> Tensor:
        """(B, K): 0 where component k belongs to class y[i], -inf elsewhere."""
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (batch,):
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"y must be an int64 Tensor of shape ({batch},), got {got}")
        mask = y[:, None] == self.classes[None, :]
        if not mask.any(1).all():
            raise ValueError(f"y contains a class with no component; classes are {self.classes.unique().tolist()}")
        return torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, -math.inf)

    def _checked(self, z: Tensor, t: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Validate (z, t, y); return z, t in float64 and the log class mask (or None)."""
        _check_points(z, self.dim)
        _check_time(t, z.shape[0])
        log_mask = None if y is None else self._log_class_mask(y, z.shape[0])
        return z.double(), t.double(), log_mask

    def _components(self, z: Tensor, t: Tensor, log_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per-component pieces (float64 inputs, no checks): log(w_k N(z; a mu_k, C_k)) (B, K), the
        eigen-coordinates U_k^T (z - a mu_k) (B, K, d), the eigenvalues c = a^2 lam + b^2 of C_k
        (B, K, d), and a = 1 - t, b = t as (B, 1, 1)."""
        a = (1 - t)[:, None, None]
        b = t[:, None, None]
        diff = z[:, None, :] - a * self.means[None]
        coords = torch.einsum("bkj,kji->bki", diff, self._eigvecs)
        c = a**2 * self._eigvals[None] + b**2
        log_normal = -0.5 * ((coords**2 / c).sum(-1) + c.log().sum(-1) + self.dim * math.log(2 * math.pi))
        log_joint = self.weights.log()[None] + log_normal
        if log_mask is not None:
            log_joint = log_joint + log_mask
        return log_joint, coords, c, a, b

    @staticmethod
    def _responsibilities(log_joint: Tensor) -> Tensor:
        """r_k = w_k N_k / sum_j w_j N_j (written with logsumexp: torch.softmax is pathologically slow
        on tiny CPU tensors when threads are contended)."""
        return (log_joint - torch.logsumexp(log_joint, dim=1, keepdim=True)).exp()

    def _velocity(self, z: Tensor, t: Tensor, log_mask: Tensor | None) -> Tensor:
        log_joint, coords, c, a, b = self._components(z, t, log_mask)
        gain = (b - a * self._eigvals[None]) / c
        per_component = torch.einsum("bki,kji->bkj", gain * coords, self._eigvecs) - self.means[None]
        return torch.einsum("bk,bkj->bj", self._responsibilities(log_joint), per_component)

    def log_prob(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """log p_t(z) = logsumexp_k [log w_k + log N(z; (1 - t) mu_k, (1 - t)^2 Sigma_k + t^2 I)], (B,)."""
        log_joint = self._components(*self._checked(z, t, y))[0]
        return torch.logsumexp(log_joint, dim=1).to(z.dtype)

    def velocity(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """v(z, t) = E[eps - x | z_t = z] = sum_k r_k [(t I - (1 - t) Sigma_k) C_k^{-1} (z - (1 - t) mu_k) - mu_k], (B, d)."""
        return self._velocity(*self._checked(z, t, y)).to(z.dtype)

    def posterior(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> MixturePosterior:
        """p(x | z_t = z) = sum_k r_k(z) N(x; mu_k + a Sigma_k C_k^{-1}(z - a mu_k), t^2 Sigma_k C_k^{-1})."""
        log_joint, coords, c, a, b = self._components(*self._checked(z, t, y))
        lam = self._eigvals[None]
        means = self.means[None] + torch.einsum("bki,kji->bkj", a * lam / c * coords, self._eigvecs)
        covs = torch.einsum("kij,bkj,klj->bkil", self._eigvecs, b**2 * lam / c, self._eigvecs)
        return MixturePosterior(self._responsibilities(log_joint), means, covs)

    def posterior_sample(
        self, z: Tensor, t: Tensor, n_per_point: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """Exact draws x ~ p(x | z_t = z), shape (B, n_per_point, d) float64: pick component k with
        probability r_k(z), then x = posterior mean_k + U_k diag(sqrt(t^2 lam / c)) xi, xi ~ N(0, I)."""
        _check_n(n_per_point, "n_per_point")
        _check_generator(generator)
        log_joint, coords, c, a, b = self._components(*self._checked(z, t, y))
        component = torch.multinomial(self._responsibilities(log_joint), n_per_point, replacement=True, generator=generator)
        index = component[..., None].expand(-1, -1, self.dim)  # (B, n, d)
        lam = self._eigvals[None]
        mean_eig = (a * lam / c * coords).gather(1, index)
        std_eig = (b**2 * lam / c).sqrt().gather(1, index)
        noise = torch.randn(z.shape[0], n_per_point, self.dim, generator=generator, dtype=torch.float64)
        eig_coords = mean_eig + std_eig * noise
        return self.means[component] + torch.einsum("bni,bnji->bnj", eig_coords, self._eigvecs[component])

    # -- flow map by an accurate ODE solve ------------------------------------------------------

    def flow_map(self, z: Tensor, t: Tensor, s: Tensor, y: Tensor | None = None, n_steps: int = 500) -> Tensor:
        """z_s from z_t along dz/dt = v(z, t): classical RK4 in float64 with ``n_steps`` equal steps per
        sample (h = (s - t) / n_steps). Requires s <= t; where s == t, z is returned unchanged.
        With the default 500 steps, the ring mixture pushed from t = 1 to 0 agrees with a 2000-step
        solve to about 1e-7 (the velocity is stiffest near t = 0 for narrow components)."""
        x, time, log_mask = self._checked(z, t, y)
        _check_time(s, z.shape[0], "s")
        _check_n(n_steps, "n_steps")
        if (s > t).any():
            raise ValueError("s must be <= t (the flow map runs from t towards the data at s)")
        h = (s.double() - time) / n_steps
        h_col = h[:, None]
        for _ in range(n_steps):
            k1 = self._velocity(x, time, log_mask)
            k2 = self._velocity(x + 0.5 * h_col * k1, time + 0.5 * h, log_mask)
            k3 = self._velocity(x + 0.5 * h_col * k2, time + 0.5 * h, log_mask)
            time = (time + h).clamp(0, 1)
            k4 = self._velocity(x + h_col * k3, time, log_mask)
            x = x + h_col / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x.to(z.dtype)

    def average_velocity(self, z: Tensor, t: Tensor, s: Tensor, y: Tensor | None = None, n_steps: int = 500) -> Tensor:
        """u(z, t, s) = (z_t - z_s) / (t - s), the exact flow-map output F(z_t, t, s); where s == t it is
        the instantaneous velocity v(z, t) (the limit)."""
        z_s = self.flow_map(z, t, s, y, n_steps).double()
        gap = (t.double() - s.double())[:, None]
        equal = gap == 0
        u = (z.double() - z_s) / torch.where(equal, torch.ones_like(gap), gap)
        return torch.where(equal, self.velocity(z, t, y).double(), u).to(z.dtype)


def gaussian(dim: int, std: float) -> GaussianMixture:
    """The single Gaussian N(0, std^2 I) of DESIGN.md's closed-form oracle."""
    _check_n(dim, "dim")
    return GaussianMixture.isotropic(torch.ones(1), torch.zeros(1, dim), torch.tensor([float(std)], dtype=torch.float64))


def ring_mixture(n_modes: int = 8, radius: float = math.sqrt(2.0), std: float = 0.1) -> GaussianMixture:
    """``n_modes`` equal-weight N(mu_k, std^2 I) with mu_k = radius (cos 2 pi k / n, sin 2 pi k / n);
    component k has class k. The default is the ``eight_gaussians`` toy."""
    _check_n(n_modes, "n_modes")
    angle = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return GaussianMixture.isotropic(torch.ones(n_modes), means, torch.full((n_modes,), float(std), dtype=torch.float64))


def class_conditional_mixture() -> GaussianMixture:
    """A 2D mixture of 3 classes with 2 anisotropic components each (unequal weights, rotated
    covariances): class c has components at angles 2 pi c / 3 +- 0.35 on the circle of radius 1.5,
    covariance elongated (std 0.3 x 0.08) along the tangent. For class-conditional tests and CFG."""
    angles, weights, classes = [], [], []
    for c in range(3):
        for sign, w in ((-1, 1.0), (1, 2.0)):
            angles.append(2 * math.pi * c / 3 + sign * 0.35)
            weights.append(w)
            classes.append(c)
    angle = torch.tensor(angles, dtype=torch.float64)
    means = 1.5 * torch.stack([angle.cos(), angle.sin()], dim=1)
    tangent = torch.stack([-angle.sin(), angle.cos()], dim=1)
    normal = torch.stack([angle.cos(), angle.sin()], dim=1)
    covs = 0.3**2 * tangent[:, :, None] * tangent[:, None, :] + 0.08**2 * normal[:, :, None] * normal[:, None, :]
    return GaussianMixture(torch.tensor(weights), means, covs, torch.tensor(classes))


# ----------------------------------------------------------------------------------------------
# 8x8 digits

DIGITS_HALVES_SEED = 0
DIGITS_HELDOUT_SEED = 1
DIGITS_HELDOUT_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    resource = importlib.resources.files("flowcore") / "assets" / "digits.npz"
    with resource.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"]
    if images.shape != (1797, 8, 8) or labels.shape != (1797,):
        raise ValueError(f"flowcore/assets/digits.npz is corrupt: images {images.shape}, labels {labels.shape}")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def digits_sha256() -> str:
    """SHA-256 of the raw digits (uint8 images then uint8 labels), recorded with the classifier."""
    images, labels = _digits_arrays()
    return hashlib.sha256(images.astype(np.uint8).tobytes() + labels.astype(np.uint8).tobytes()).hexdigest()


def load_digits() -> tuple[Tensor, Tensor]:
    """The 1797 8x8 digits: images (1797, 1, 8, 8) float32 in [-1, 1] (pixel / 16 * 2 - 1), labels (1797,) int64."""
    images, labels = _digits_arrays()
    x = torch.from_numpy(images.astype(np.float32)).reshape(-1, 1, 8, 8) / 16 * 2 - 1
    return x, torch.from_numpy(labels.astype(np.int64))


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Index tensors (idx_a, idx_b): within each class a fixed permutation (numpy's legacy
    ``RandomState(seed)``, whose stream is frozen across versions), the first round(fraction * n_c)
    go to ``idx_a``, the rest to ``idx_b``. Both are sorted."""
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.dtype != torch.int64:
        raise ValueError("labels must be a 1D int64 Tensor")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.RandomState(seed)
    labels_np = labels.numpy()
    part_a, part_b = [], []
    for c in np.unique(labels_np):
        members = np.flatnonzero(labels_np == c)[rng.permutation(int((labels_np == c).sum()))]
        cut = int(round(fraction * len(members)))
        part_a.append(members[:cut])
        part_b.append(members[cut:])
    return torch.from_numpy(np.sort(np.concatenate(part_a))), torch.from_numpy(np.sort(np.concatenate(part_b)))


def digits_halves() -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Two fixed, class-stratified halves ((x_a, y_a), (x_b, y_b)) of the digits (898 / 899 images):
    the real-vs-real floor of the Frechet distance compares them."""
    x, y = load_digits()
    a, b = stratified_split(y, 0.5, DIGITS_HALVES_SEED)
    return (x[a], y[a]), (x[b], y[b])


def digits_train_heldout() -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The classifier's fixed, class-stratified split ((x_train, y_train), (x_heldout, y_heldout)),
    80 % / 20 % (1438 / 359 images)."""
    x, y = load_digits()
    heldout, train = stratified_split(y, DIGITS_HELDOUT_FRACTION, DIGITS_HELDOUT_SEED)
    return (x[train], y[train]), (x[heldout], y[heldout])
