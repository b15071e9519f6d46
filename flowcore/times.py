"""Samplers of times t in [0, 1] and of (t, s) pairs with s <= t (t = 1 noise, t = 0 data).

Single-time distributions (frozen dataclasses with ``sample(n, generator) -> Tensor (n,)``):
- ``Uniform(low, high)``: t ~ U[low, high].
- ``LogitNormal(mean, std)``: logit(t) ~ N(mean, std^2) (SD3, Esser et al. 2024; MeanFlow uses (-0.4, 1.0)).
  A paper with data at t = 1 (JiT, Latent Forcing) has LN(mu) on 1 - t: use LogitNormal(-mu, std).
- ``LogNormalSigma(mean, std)``: EDM's log sigma ~ N(mean, std^2) (Karras et al. 2022), mapped to the
  linear path's time t = sigma / (1 + sigma) (sigma = b/a = t/(1-t)). Identical in law to
  ``LogitNormal(mean, std)``; it exists to port EDM constants (P_mean, P_std) without re-deriving them.
- ``DiscreteGrid(values)``: t uniform over a fixed grid of values.
- ``Mixture(components, weights)``: a mixture of the above.

Pairs: ``sample_pairs`` draws two times, orders them as t = max, s = min, and sets s = t on an exact
fraction of the rows (MeanFlow's "r = t" rows, Geng et al. 2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class TimeDistribution(Protocol):
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...


@dataclass(frozen=True)
class Uniform:
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ValueError(f"Uniform needs 0 <= low <= high <= 1, got low={self.low}, high={self.high}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.low + (self.high - self.low) * torch.rand(n, generator=generator)


@dataclass(frozen=True)
class LogitNormal:
    """t = sigmoid(mean + std * N(0, 1))."""

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.std <= 0:
            raise ValueError(f"LogitNormal std must be positive, got {self.std}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.sigmoid(self.mean + self.std * torch.randn(n, generator=generator))


@dataclass(frozen=True)
class LogNormalSigma:
    """sigma = exp(mean + std * N(0, 1)), t = sigma / (1 + sigma) (EDM's noise level on the linear path)."""

    mean: float = -1.2
    std: float = 1.2

    def __post_init__(self) -> None:
        if self.std <= 0:
            raise ValueError(f"LogNormalSigma std must be positive, got {self.std}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        sigma = torch.exp(self.mean + self.std * torch.randn(n, generator=generator))
        return sigma / (1 + sigma)


@dataclass(frozen=True)
class DiscreteGrid:
    """t drawn uniformly from ``values`` (e.g. a consistency-model discretisation)."""

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.values) == 0 or any(not 0.0 <= v <= 1.0 for v in self.values):
            raise ValueError(f"DiscreteGrid values must be a non-empty tuple in [0, 1], got {self.values}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        grid = torch.tensor(self.values, dtype=torch.float32)
        return grid[torch.randint(len(self.values), (n,), generator=generator)]


@dataclass(frozen=True)
class Mixture:
    """t from ``components[i]`` with probability ``weights[i]`` (e.g. pixel MeanFlow's logit-normal
    with 10% of the rows uniform)."""

    components: tuple[TimeDistribution, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.components) != len(self.weights) or not self.components:
            raise ValueError("Mixture needs one weight per component and at least one component")
        if any(w < 0 for w in self.weights) or abs(sum(self.weights) - 1.0) > 1e-6:
            raise ValueError(f"Mixture weights must be non-negative and sum to 1, got {self.weights}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        which = torch.multinomial(torch.tensor(self.weights), n, replacement=True, generator=generator)
        draws = torch.stack([c.sample(n, generator) for c in self.components])
        return draws.gather(0, which[None]).squeeze(0)


def uniform_grid(steps: int) -> Tensor:
    """The sampling schedule 1 = t_0 > t_1 > ... > t_steps = 0, evenly spaced."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1)


def sample_pairs(
    n: int,
    t_dist: TimeDistribution,
    s_dist: TimeDistribution | None = None,
    *,
    equal_fraction: float = 0.0,
    equal_before_sort: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw (t, s) with s <= t: a ~ t_dist, b ~ s_dist (default t_dist), t = max(a, b), s = min(a, b),
    and s = t on round(equal_fraction * n) randomly placed rows.

    ``equal_before_sort``: the equal rows take t = a (one draw's marginal, as pixel MeanFlow does)
    instead of t = max(a, b) (as MeanFlow's JAX code, which sets r = t after sorting).
    """
    if not 0.0 <= equal_fraction <= 1.0:
        raise ValueError(f"equal_fraction must be in [0, 1], got {equal_fraction}")
    a = t_dist.sample(n, generator)
    b = (s_dist or t_dist).sample(n, generator)
    equal = torch.zeros(n, dtype=torch.bool)
    equal[torch.randperm(n, generator=generator)[: int(round(equal_fraction * n))]] = True
    if equal_before_sort:
        b = torch.where(equal, a, b)
    t, s = torch.maximum(a, b), torch.minimum(a, b)
    return t, torch.where(equal, t, s)


def check_times(t: Tensor, s: Tensor | None = None, *, batch: int | None = None, name: str = "t") -> None:
    """Raise a ValueError naming the problem unless t (and s) are (B,) float tensors in [0, 1] with s <= t."""
    for label, x in ((name, t), ("s", s)):
        if x is None:
            continue
        if not isinstance(x, Tensor) or x.dim() != 1 or not x.is_floating_point():
            raise ValueError(f"{label} must be a float tensor of shape (B,), got {type(x).__name__} {getattr(x, 'shape', '')}")
        if batch is not None and x.shape[0] != batch:
            raise ValueError(f"{label} has {x.shape[0]} entries but the batch has {batch}")
        if torch.isnan(x).any():
            raise ValueError(f"{label} contains NaN")
        if (x < 0).any() or (x > 1).any():
            raise ValueError(f"{label} must lie in [0, 1], got range [{x.min().item():.4g}, {x.max().item():.4g}]")
    if s is not None:
        if s.shape != t.shape:
            raise ValueError(f"s and {name} must have the same shape, got {tuple(s.shape)} and {tuple(t.shape)}")
        bad = s > t
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"s must be <= {name} (flow maps go from t to an earlier time s); row {i}: s={s[i].item():.4g} > {name}={t[i].item():.4g}")


def logit_normal_density(t: Tensor, mean: float, std: float) -> Tensor:
    """p(t) = N(logit t; mean, std^2) / (t (1 - t)), for tests and plots."""
    logit = torch.log(t) - torch.log1p(-t)
    return torch.exp(-0.5 * ((logit - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi) * t * (1 - t))
