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


def logit_normal_with_uniform(mean: float, std: float, uniform_fraction: float) -> TimeDistribution:
    """logit-normal(mean, std) with ``uniform_fraction`` of the draws uniform on [0, 1] (pixel MeanFlow's
    tr_uniform: 0, 0.8 and 0.1). A fraction of 0 gives the logit-normal itself, whose random stream draws once per
    time where a ``Mixture`` draws from every part."""
    if not 0.0 <= uniform_fraction <= 1.0:
        raise ValueError(f"uniform_fraction must be in [0, 1], got {uniform_fraction}")
    if uniform_fraction == 0:
        return LogitNormal(mean, std)
    return Mixture((LogitNormal(mean, std), Uniform()), (1.0 - uniform_fraction, uniform_fraction))


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


@dataclass(frozen=True)
class SigmoidCurriculum:
    """A value annealed from ``initial`` to ``final`` along a sigmoid: alpha-Flow's schedule of alpha
    (Zhang et al. 2025, arXiv 2510.20771, from alpha = 1, trajectory flow matching, to alpha = 0, MeanFlow).

        a(k) = initial                                                      k < start
        a(k) = initial + (final - initial) sigmoid(gamma (k - m) / (end - start)),  m = (start + end) / 2
        a(k) = final                                                        k > end

    then snapped to the ends: a < clamp -> 0 and a > 1 - clamp -> 1, so a run starts on exact
    trajectory flow matching and ends on exact MeanFlow (the official values: gamma = 25,
    clamp = 0.005, which makes about the first and last 29% of [start, end] exactly 1 and 0).
    """

    start: int
    end: int
    initial: float = 1.0
    final: float = 0.0
    gamma: float = 25.0
    clamp: float = 0.005

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"SigmoidCurriculum needs 0 <= start < end, got start={self.start}, end={self.end}")
        if not (0.0 <= self.initial <= 1.0 and 0.0 <= self.final <= 1.0):
            raise ValueError(f"SigmoidCurriculum values must lie in [0, 1], got initial={self.initial}, final={self.final}")
        if self.gamma <= 0 or not 0.0 <= self.clamp < 0.5:
            raise ValueError(f"SigmoidCurriculum needs gamma > 0 and 0 <= clamp < 0.5, got gamma={self.gamma}, clamp={self.clamp}")

    def __call__(self, step: int) -> float:
        if step < self.start:
            value = self.initial
        elif step > self.end:
            value = self.final
        else:
            progress = (step - 0.5 * (self.start + self.end)) / (self.end - self.start)
            value = self.initial + (self.final - self.initial) / (1.0 + math.exp(-self.gamma * progress))
        if value < self.clamp:
            return 0.0
        if value > 1.0 - self.clamp:
            return 1.0
        return value


def logit_normal_quantile(u: Tensor, mean: float, std: float) -> Tensor:
    """The inverse CDF of LogitNormal(mean, std): t = sigmoid(mean + std sqrt(2) erfinv(2u - 1)), u in (0, 1)."""
    return torch.sigmoid(mean + std * math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0))


@dataclass(frozen=True)
class EasyToHardCurriculum:
    """A time sampler that starts on the easy, noisy times and widens towards the data: a fixed-pace
    version of the Denoising-Task-Difficulty curriculum (DTD, Kim et al. 2024, arXiv 2403.10348), which
    "Understanding, Accelerating, and Improving MeanFlow Training" (Kim et al. 2025, arXiv 2511.19065)
    uses on MeanFlow's s = t (velocity) rows.

    The base law LogitNormal(mean, std) is cut into ``n_bins`` bins of equal mass; at training
    progress p in [0, 1] the k(p) = min(n_bins, 1 + floor(n_bins p / unlock_fraction)) noisiest bins
    are open and t is drawn from the base law restricted to them:
    t = Q(1 - (k / n_bins) U), U ~ U[0, 1), Q the base quantile. After ``unlock_fraction`` of the run
    this is the base law. (DTD clusters DDPM timesteps and paces by the loss; DDPM's "early, hard"
    timesteps are low noise, i.e. t near 0 here, since flowcore's t = 1 is noise: the curriculum
    opens from t = 1 downwards.)
    """

    base: LogitNormal
    n_bins: int = 5
    unlock_fraction: float = 0.3

    def __post_init__(self) -> None:
        if self.n_bins < 1:
            raise ValueError(f"EasyToHardCurriculum needs n_bins >= 1, got {self.n_bins}")
        if not 0.0 < self.unlock_fraction <= 1.0:
            raise ValueError(f"EasyToHardCurriculum needs 0 < unlock_fraction <= 1, got {self.unlock_fraction}")

    def open_bins(self, progress: float) -> int:
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"training progress must lie in [0, 1], got {progress}")
        return min(self.n_bins, 1 + math.floor(self.n_bins * progress / self.unlock_fraction))

    def sample(self, n: int, progress: float, generator: torch.Generator | None = None) -> Tensor:
        u = 1.0 - (self.open_bins(progress) / self.n_bins) * torch.rand(n, generator=generator)
        return logit_normal_quantile(u.clamp(max=1.0 - 1e-7), self.base.mean, self.base.std)


def sample_gap_pairs(
    n: int,
    gap_dist: LogitNormal = LogitNormal(-0.8, 1.0),
    s_dist: LogitNormal = LogitNormal(-0.4, 1.0),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Terminal Velocity Matching's (t, s) pairs (Zhou et al. 2025, arXiv 2511.19797; official sampler):
    the gap g ~ gap_dist, the target time s ~ s_dist truncated to [0, 1 - g] (by inverse CDF), and
    t = min(s + g, 1). So 0 <= s < t <= 1 on every row, and t - s = g up to rounding.
    """
    g = gap_dist.sample(n, generator)
    limit = torch.special.ndtr((torch.logit(1.0 - g) - s_dist.mean) / s_dist.std)
    u = (torch.rand(n, generator=generator) * limit).clamp(min=1e-12)
    s = logit_normal_quantile(u, s_dist.mean, s_dist.std).clamp(max=1.0)
    s = torch.minimum(s, 1.0 - g)
    return (s + g).clamp(max=1.0), s


def sample_condition_times(n: int, noise_rate: float = 0.1, power: float = 2.0, generator: torch.Generator | None = None) -> Tensor:
    """Meta Flow Maps' time c of the conditioning state z_c = (1 - c) x + c n (Potaptchik et al. 2026,
    arXiv 2601.14430, official ``sample_t_cond``: t_cond = U^power w.p. 1 - noise_rate, else 0, in
    their time where 0 is noise), converted to flowcore's time: c = 1 - U^power, and c = 1 (a
    pure-noise condition, i.e. unconditional generation) on a ``noise_rate`` fraction in law.
    With power 2, c leans towards noisy conditions. c in (0, 1] (U in [0, 1)), shape (n,)."""
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}")
    if not power > 0:
        raise ValueError(f"power must be positive, got {power}")
    u = torch.rand(n, generator=generator)
    noise = torch.rand(n, generator=generator) < noise_rate
    return torch.where(noise, torch.ones(n), 1.0 - u**power)


def time_of_sigma(sigma: Tensor) -> Tensor:
    """EDM's noise level sigma (x_sigma = x + sigma eps) as the linear path's time: x_sigma = z_t / (1 - t)
    with t = sigma / (1 + sigma) (so sigma = t / (1 - t); sigma = inf is t = 1)."""
    return sigma / (1.0 + sigma)


def sigma_of_time(t: Tensor) -> Tensor:
    """sigma = t / (1 - t), the inverse of ``time_of_sigma`` (inf at t = 1)."""
    return t / (1.0 - t)


def karras_times(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """The consistency models' discretisation (Karras et al. 2022; Song et al. 2023, arXiv 2303.01469)
    on flowcore's time, increasing, fp64, shape (n,):

        sigma_i = (sigma_min^(1/rho) + i / (n - 1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho,  i = 0 .. n - 1,
        t_i = sigma_i / (1 + sigma_i)        (``time_of_sigma``: sigma_min = 0.002 -> t = 0.001996, sigma_max = 80 -> t = 80/81).
    """
    if n < 2:
        raise ValueError(f"a consistency grid needs n >= 2 points, got {n}")
    if not 0 < sigma_min < sigma_max or rho <= 0:
        raise ValueError(f"karras_times needs 0 < sigma_min < sigma_max and rho > 0, got {sigma_min}, {sigma_max}, {rho}")
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return time_of_sigma((lo + ramp * (hi - lo)) ** rho)


def ct_discretization(step: int, total_steps: int, s0: int = 2, s1: int = 150) -> int:
    """Consistency training's number of grid points N(k) (Song et al. 2023, arXiv 2303.01469, App. C):
    N(k) = ceil(sqrt(k / K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1, from N(0) = s0 up to N(K) = s1 + 1."""
    if not 0 <= step <= total_steps or total_steps < 1:
        raise ValueError(f"need 0 <= step <= total_steps, got step={step}, total_steps={total_steps}")
    return math.ceil(math.sqrt(step / total_steps * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1


def ct_target_decay(n_points: int, s0: int = 2, mu0: float = 0.9) -> float:
    """Consistency training's EMA decay of the target network, mu(k) = exp(s0 log(mu0) / N(k))
    (Song et al. 2023, App. C): mu0 at N = s0, tending to 1 as the grid refines."""
    if n_points < 2 or not 0.0 < mu0 < 1.0:
        raise ValueError(f"ct_target_decay needs n_points >= 2 and 0 < mu0 < 1, got {n_points}, {mu0}")
    return math.exp(s0 * math.log(mu0) / n_points)


def ict_discretization(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """improved consistency training's doubling curriculum (Song & Dhariwal 2023, arXiv 2310.14189, eq. 9):
    N(k) = min(s0 2^floor(k / K'), s1) + 1,  K' = floor(K / (log2 floor(s1 / s0) + 1)).
    With s0 = 10, s1 = 1280 the grid doubles 7 times, at every eighth of training: 11, 21, ..., 1281."""
    if not 0 <= step <= total_steps or total_steps < 1:
        raise ValueError(f"need 0 <= step <= total_steps, got step={step}, total_steps={total_steps}")
    if not 1 <= s0 <= s1:
        raise ValueError(f"ict_discretization needs 1 <= s0 <= s1, got s0={s0}, s1={s1}")
    stage = max(1, total_steps // (int(math.log2(s1 // s0)) + 1))
    return min(s0 * 2 ** (step // stage), s1) + 1


def ict_pair_probabilities(grid: Tensor, mean: float = -1.1, std: float = 2.0) -> Tensor:
    """iCT's discrete log-normal proposal over the pairs (t_i, t_{i+1}) of an increasing grid (Song &
    Dhariwal 2023, eq. 10): p(i) proportional to erf((log sigma_{i+1} - mean) / (sqrt 2 std)) - erf((log sigma_i - mean) / (sqrt 2 std)),
    sigma = t / (1 - t). Shape (len(grid) - 1,), sums to 1."""
    if grid.dim() != 1 or grid.numel() < 2 or not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("ict_pair_probabilities needs an increasing grid of at least two times")
    cdf = torch.erf((torch.log(sigma_of_time(grid.double())) - mean) / (math.sqrt(2.0) * std))
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


def sample_grid_pairs(n: int, grid: Tensor, probabilities: Tensor | None = None,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Adjacent grid times as flowcore pairs: index i (uniform, or by ``probabilities``), t = grid[i + 1],
    s = grid[i] (s < t: the consistency models' (sigma_{n+1}, sigma_n)). fp32, shapes (n,)."""
    if grid.dim() != 1 or grid.numel() < 2 or not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("sample_grid_pairs needs an increasing grid of at least two times")
    if probabilities is None:
        i = torch.randint(grid.numel() - 1, (n,), generator=generator)
    else:
        if probabilities.shape != (grid.numel() - 1,):
            raise ValueError(f"probabilities must have shape ({grid.numel() - 1},), got {tuple(probabilities.shape)}")
        i = torch.multinomial(probabilities.float(), n, replacement=True, generator=generator)
    return grid[i + 1].float(), grid[i].float()


@dataclass(frozen=True)
class TrigFlowLogNormal:
    """sCM's time distribution (Lu & Song 2024, arXiv 2410.11081): tau ~ N(mean, std^2),
    TrigFlow angle theta = arctan(e^tau / sigma_data), returned as flowcore's ``CosinePath`` time
    t = 2 theta / pi (the path's angle is pi t / 2). e^tau is EDM's sigma, so (mean, std) are EDM's
    (P_mean, P_std): sCM uses (-1.0, 1.4) on CIFAR-10 with sigma_data = 0.5."""

    mean: float = -1.0
    std: float = 1.4
    sigma_data: float = 0.5

    def __post_init__(self) -> None:
        if self.std <= 0 or self.sigma_data <= 0:
            raise ValueError(f"TrigFlowLogNormal needs std > 0 and sigma_data > 0, got {self.std}, {self.sigma_data}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        sigma = torch.exp(self.mean + self.std * torch.randn(n, generator=generator))
        return torch.atan(sigma / self.sigma_data) * (2.0 / math.pi)


@dataclass(frozen=True)
class StreamTimes:
    """Per-row times of a two-stream (pixel, latent) model and the 0/1 loss weight of each stream,
    all (B,) in flowcore time (t = 0 data, t = 1 noise)."""

    t_pix: Tensor
    t_lat: Tensor
    pixel_weight: Tensor
    latent_weight: Tensor


LATENT_FORCING_PIXEL_TIMES = Mixture((LogitNormal(0.4, 0.8), Uniform(0.5, 1.0)), (0.9, 0.1))
"""Latent Forcing's pixel time (arXiv 2602.11401) in flowcore time: the paper's (data at t = 1)
t_pix ~ sigmoid(N(-0.4, 0.8)), on 10% of the rows U[0, 0.5] (near-noise pixels), becomes
LogitNormal(+0.4, 0.8) with 10% U[0.5, 1]."""

LATENT_FORCING_LATENT_TIMES = LogitNormal(1.2, 1.0)
"""Latent Forcing's latent time on latent steps: the paper's sigmoid(N(-1.2, 1.0)) is LogitNormal(+1.2, 1.0) here."""


def latent_first_times(
    n: int,
    p_latent: float = 0.4,
    latent: TimeDistribution = LATENT_FORCING_LATENT_TIMES,
    pixel: TimeDistribution = LATENT_FORCING_PIXEL_TIMES,
    latent_noise: TimeDistribution = Uniform(0.0, 0.25),
    generator: torch.Generator | None = None,
) -> StreamTimes:
    """Latent Forcing's cascaded "latent first" two-time sampler (Baade et al. 2026, arXiv 2602.11401;
    official ``sample_mode = dino_first_cascaded_noised``), in flowcore time:

        latent step (probability p_latent):  t_lat ~ latent,        t_pix = 1 (pure-noise pixels);  loss on the latent only
        pixel step  (probability 1 - p):     t_lat ~ latent_noise,  t_pix ~ pixel;                 loss on the pixels only

    The paper puts data at t = 1; with t_flowcore = 1 - t_paper its constants convert as
    t_lat ~ sigmoid(N(-1.2, 1)) -> LogitNormal(+1.2, 1); t_pix ~ sigmoid(N(-0.4, 0.8)) with 10% U[0, 0.5]
    -> ``LATENT_FORCING_PIXEL_TIMES``; the slightly noised latent of pixel steps U[0.75, 1] (beta = 0.25)
    -> U[0, 0.25]; pure-noise pixels t_pix = 0 -> 1. Returns ``StreamTimes`` with
    pixel_weight = 1 - latent_weight = [pixel step]."""
    if not 0.0 <= p_latent <= 1.0:
        raise ValueError(f"p_latent must lie in [0, 1], got {p_latent}")
    latent_step = torch.rand(n, generator=generator) < p_latent
    t_lat = torch.where(latent_step, latent.sample(n, generator), latent_noise.sample(n, generator))
    t_pix = torch.where(latent_step, torch.ones(n), pixel.sample(n, generator))
    check_times(t_pix, batch=n, name="t_pix")
    check_times(t_lat, batch=n, name="t_lat")
    return StreamTimes(t_pix, t_lat, (~latent_step).float(), latent_step.float())


def independent_stream_times(
    n: int,
    latent: TimeDistribution = LATENT_FORCING_LATENT_TIMES,
    pixel: TimeDistribution = LATENT_FORCING_PIXEL_TIMES,
    generator: torch.Generator | None = None,
) -> StreamTimes:
    """The joint-random-times ablation of Latent Forcing (arXiv 2602.11401): t_pix ~ pixel and
    t_lat ~ latent drawn independently on every row, both streams in the loss on every row (weights 1).
    Without the cascade, neither stream is trained to wait for the other; sample it on a schedule
    that moves both times together (``sampling.simultaneous_stream_grids``)."""
    t_pix, t_lat = pixel.sample(n, generator), latent.sample(n, generator)
    check_times(t_pix, batch=n, name="t_pix")
    check_times(t_lat, batch=n, name="t_lat")
    return StreamTimes(t_pix, t_lat, torch.ones(n), torch.ones(n))
