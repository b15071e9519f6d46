"""Evaluation metrics: sliced W2 and energy distance for 2D, Frechet distance in a digits classifier's
features and the class accuracy of class-conditional samples, each reported beside its floor.

The floor of a metric is its value between two independent data samples of the same size as the
generated one: a model cannot be expected to go below it, so results read as "value / floor".

- ``sliced_w2(x, y)``: sqrt of the mean over fixed unit directions theta of W2^2(theta.x, theta.y), the
  1D squared Wasserstein-2 distance between the projected empirical distributions.
- ``energy_distance(x, y)``: 2 E|X - Y| - E|X - X'| - E|Y - Y'| between the two empirical
  distributions (a V-statistic: exactly 0 for identical sets, >= 0 always) [Szekely & Rizzo 2013].
- ``frechet_distance(a, b)``: ||m_a - m_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2}) between Gaussians
  fitted to two feature sets [Heusel et al. 2017, the FID formula].
- ``straightness(field, eps, steps)``: rectified flow's S = int_0^1 E||(z_1 - z_0) - v(z_t, t)||^2 dt
  along the ODE from eps (Liu et al. 2022); 0 for straight trajectories.
- ``DigitsJudge``: the shipped classifier (``scripts/train_digits_classifier.py`` writes
  ``flowcore/assets/digits_classifier.safetensors``); features are its 64-d penultimate layer.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import safetensors
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowcore import data

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# ----------------------------------------------------------------------------------------------
# checks


def _check_samples(x: Tensor, name: str, min_rows: int = 1) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim != 2 or x.shape[0] < min_rows:
        raise ValueError(f"{name} must have shape (n, d) with n >= {min_rows}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_pair(x: Tensor, y: Tensor, min_rows: int = 1) -> None:
    _check_samples(x, "x", min_rows)
    _check_samples(y, "y", min_rows)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")


# ----------------------------------------------------------------------------------------------
# 2D sample metrics


def projections(dim: int, n_projections: int, seed: int = 0) -> Tensor:
    """Fixed unit directions (n_projections, dim) float64: rows of N(0, I) draws from
    ``torch.Generator().manual_seed(seed)``, normalised (uniform on the sphere)."""
    if dim < 1 or n_projections < 1:
        raise ValueError(f"dim and n_projections must be >= 1, got {dim} and {n_projections}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n_projections, dim, generator=g, dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def _w2_squared_1d(xs: Tensor, ys: Tensor) -> Tensor:
    """W2^2 between 1D empirical distributions given sorted rows xs (P, n), ys (P, m):
    int_0^1 (F_x^{-1}(u) - F_y^{-1}(u))^2 du, exact for unequal n and m (quantile functions are
    piecewise constant with breaks at i/n and j/m; breaks are kept as integers over n m)."""
    n, m = xs.shape[1], ys.shape[1]
    if n == m:
        return ((xs - ys) ** 2).mean(dim=1)
    breaks = torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]).unique()  # sorted, in units of 1/(n m)
    widths = torch.diff(breaks, prepend=breaks.new_zeros(1)).double() / (n * m)
    ix = (breaks + m - 1) // m - 1  # ceil(K / m) - 1: the x quantile on (K_prev, K]
    iy = (breaks + n - 1) // n - 1
    return (((xs[:, ix] - ys[:, iy]) ** 2) * widths).sum(dim=1)


def sliced_w2(x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """SW2(x, y) = sqrt( (1/P) sum_p W2^2(theta_p . x, theta_p . y) ) with P = ``n_projections`` fixed
    directions ``projections(d, P, seed)``; computed in float64. Sizes of x and y may differ."""
    _check_pair(x, y)
    theta = projections(x.shape[1], n_projections, seed)
    xs = torch.sort(theta @ x.double().T, dim=1).values
    ys = torch.sort(theta @ y.double().T, dim=1).values
    return _w2_squared_1d(xs, ys).mean().sqrt().item()


def _mean_distance(x: Tensor, y: Tensor, chunk: int = 1024) -> Tensor:
    """(1 / (n m)) sum_ij ||x_i - y_j||, in row chunks so memory stays O(chunk m)."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        total = total + torch.cdist(x[start : start + chunk], y).sum()
    return total / (x.shape[0] * y.shape[0])


def energy_distance(x: Tensor, y: Tensor) -> float:
    """E(x, y) = 2 mean_ij ||x_i - y_j|| - mean_ij ||x_i - x_j|| - mean_ij ||y_i - y_j|| (float64,
    V-statistic: the squared energy distance between the two empirical distributions)."""
    _check_pair(x, y)
    x, y = x.double(), y.double()
    return (2 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)).item()


DEFAULT_2D_SAMPLES = 5000


@dataclasses.dataclass(frozen=True)
class MetricWithFloor:
    """A metric's value beside its floor (the same metric between independent data samples of the
    same size); ``ratio`` = value / floor."""

    value: float
    floor: float

    @property
    def ratio(self) -> float:
        return self.value / self.floor

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "floor": self.floor, "ratio": self.ratio}


def metric_with_floor(
    metric: Callable[[Tensor, Tensor], float],
    generated: Tensor,
    sample_data: Callable[[int, torch.Generator], Tensor],
    seed: int = 0,
    floor_repeats: int = 5,
) -> MetricWithFloor:
    """value = metric(generated, ref) and floor = (1/R) sum_r metric(other_r, ref), where ref and the
    R = ``floor_repeats`` others are independent draws of len(generated) points from
    ``sample_data(n, generator)`` with one generator seeded by ``seed`` (every model meets the same
    reference). Averaging the floor over R draws removes most of its sampling noise (a single draw
    of the checkerboard SW2 floor at 2000 points varies by about +-20 %)."""
    _check_samples(generated, "generated")
    if floor_repeats < 1:
        raise ValueError(f"floor_repeats must be >= 1, got {floor_repeats}")
    g = torch.Generator().manual_seed(seed)
    n = generated.shape[0]
    ref = sample_data(n, g)
    floor = sum(metric(sample_data(n, g), ref) for _ in range(floor_repeats)) / floor_repeats
    return MetricWithFloor(metric(generated, ref), floor)


def evaluate_2d(
    generated: Tensor, sample_data: Callable[[int, torch.Generator], Tensor], seed: int = 0
) -> dict[str, MetricWithFloor]:
    """Sliced W2 (256 directions, projection seed 0) and energy distance of ``generated`` against
    fresh data, each with its floor (5 repeats); e.g. ``evaluate_2d(x, Toy2D.CHECKERBOARD.sample)``
    with ``DEFAULT_2D_SAMPLES`` generated points."""
    return {
        "sliced_w2": metric_with_floor(sliced_w2, generated, sample_data, seed),
        "energy_distance": metric_with_floor(energy_distance, generated, sample_data, seed),
    }


def posterior_distance(
    metric: Callable[[Tensor, Tensor], float],
    generated: Tensor,
    mixture: data.GaussianMixture,
    z: Tensor,
    t: Tensor,
    seed: int = 0,
    floor_repeats: int = 5,
) -> MetricWithFloor:
    """How well ``generated`` (n, d) samples the exact posterior p(x | z_t = z) of a Gaussian mixture
    on the linear path (for posterior samplers such as Meta Flow Maps, arXiv 2601.14430): value =
    metric(generated, exact draws), floor = the same metric between independent exact draws of the
    same size (``metric_with_floor`` with ``mixture.posterior_sample``). ``z`` (d,) and ``t`` (scalar
    tensor) name one conditioning state."""
    if z.ndim != 1 or t.ndim != 0:
        raise ValueError(f"z must have shape (d,) and t be a scalar tensor, got {tuple(z.shape)} and {tuple(t.shape)}")

    def exact(n: int, g: torch.Generator) -> Tensor:
        return mixture.posterior_sample(z[None].double(), t[None].double(), n, g)[0]

    return metric_with_floor(metric, generated, exact, seed, floor_repeats)


# ----------------------------------------------------------------------------------------------
# straightness of a flow


@torch.no_grad()
def straightness(field: Callable[[Tensor, Tensor], Tensor], eps: Tensor, steps: int) -> float:
    """Straightness of the ODE dz/dt = v(z, t) from z_1 = eps to z_0 (Liu, Gong & Liu 2022,
    arXiv 2209.03003, Def. 2.2):

        S = int_0^1 E ||(z_1 - z_0) - v(z_t, t)||^2 dt     (squared norm summed over dimensions,
                                                            mean over the batch of eps)

    S = 0 exactly when every trajectory is a straight line run at constant speed (then one Euler
    step is exact). The trajectory is integrated with ``steps`` Heun steps on the uniform grid,
    v is evaluated at every grid node, and the t-integral is the trapezoid rule over the nodes
    (error O(1/steps^2) for smooth fields). Example: data N(0, s^2 I) on the linear path gives
    S = E||eps||^2 s (2 - pi/2), zero only as s -> 0 (tests/test_rf_jit.py)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not isinstance(eps, Tensor) or not eps.is_floating_point() or eps.dim() < 2:
        raise ValueError("eps must be a float tensor of shape (B, ...)")
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    z, velocities = eps, []
    for i in range(steps + 1):
        t = times[i].to(eps.dtype).expand(eps.shape[0]).clone()
        v = field(z, t)
        velocities.append(v)
        if i == steps:
            break
        h = (times[i + 1] - times[i]).to(eps.dtype)
        z_pred = z + h * v
        z = z + 0.5 * h * (v + field(z_pred, times[i + 1].to(eps.dtype).expand(eps.shape[0]).clone()))
    if not torch.isfinite(z).all():
        raise FloatingPointError("straightness: the ODE solution is not finite")
    chord = eps - z
    gaps = torch.stack([(chord - v).flatten(1).square().sum(1).mean() for v in velocities]).double()
    dt = 1.0 / steps
    return float(dt * (gaps.sum() - 0.5 * (gaps[0] + gaps[-1])))


# ----------------------------------------------------------------------------------------------
# Frechet distance


def gaussian_frechet_distance(mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor) -> float:
    """W2^2 between N(m_a, C_a) and N(m_b, C_b): ||m_a - m_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2}).

    Tr (C_a C_b)^{1/2} = Tr (C_a^{1/2} C_b C_a^{1/2})^{1/2}, a symmetric PSD matrix, so both square
    roots come from symmetric eigen-decompositions (eigenvalues clamped at 0) in float64; no
    non-symmetric matrix square root is taken."""
    mean_a, cov_a, mean_b, cov_b = (v.double() for v in (mean_a, cov_a, mean_b, cov_b))
    lam, vecs = torch.linalg.eigh(cov_a)
    root_a = (vecs * lam.clamp(min=0).sqrt()) @ vecs.T
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root
    return value.item()


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (n_a, d), (n_b, d): sample means
    and unbiased covariances in float64, then ``gaussian_frechet_distance``."""
    _check_pair(feats_a, feats_b, min_rows=2)
    a, b = feats_a.double(), feats_b.double()
    return gaussian_frechet_distance(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1), b.mean(0), torch.cov(b.T).reshape(b.shape[1], -1))


# ----------------------------------------------------------------------------------------------
# digits classifier and judge

CLASSIFIER_KIND = "digits_classifier"
CLASSIFIER_FORMAT = "1"
FEATURE_DIM = 64


class DigitsClassifier(nn.Module):
    """A small CNN on 8x8 digits in [-1, 1], input (B, 1, 8, 8):

    conv3x3(1 -> 32) GELU, conv3x3(32 -> 64) GELU, 2x2 average pool, flatten (1024),
    linear(1024 -> 64) GELU = features (the penultimate layer), linear(64 -> 10) = logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.hidden = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: Tensor) -> Tensor:
        h = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.hidden(F.avg_pool2d(h, 2).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def default_classifier_path() -> Traversable:
    """The shipped weights, ``flowcore/assets/digits_classifier.safetensors``."""
    return importlib.resources.files("flowcore") / "assets" / "digits_classifier.safetensors"


def _read_safetensors(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, Tensor]]:
    """Metadata and tensors of a safetensors file; ValueError naming the file when it is malformed."""
    try:
        with safetensors.safe_open(os.fspath(path), framework="pt") as f:
            return f.metadata() or {}, {key: f.get_tensor(key) for key in f.keys()}
    except safetensors.SafetensorError as err:
        raise ValueError(f"{path} is not a valid safetensors file: {err}") from err


def load_digits_classifier(path: str | os.PathLike | None = None) -> tuple[DigitsClassifier, dict[str, str]]:
    """Load a ``DigitsClassifier`` (eval mode, parameters frozen) and its metadata from safetensors
    (default: the shipped ``flowcore/assets/digits_classifier.safetensors``).

    Raises ValueError naming the file when it is not valid safetensors, was not written by
    ``scripts/train_digits_classifier.py`` (metadata ``flowcore_kind`` / ``format``), or its tensors do
    not match the architecture. Nothing is unpickled."""
    if path is None:
        with importlib.resources.as_file(default_classifier_path()) as real:
            metadata, tensors = _read_safetensors(real)
            path = real
    else:
        metadata, tensors = _read_safetensors(path)
    if metadata.get("flowcore_kind") != CLASSIFIER_KIND or metadata.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(
            f"{path} is not a flowcore digits classifier: metadata flowcore_kind={metadata.get('flowcore_kind')!r}, "
            f"format={metadata.get('format')!r} (expected {CLASSIFIER_KIND!r}, {CLASSIFIER_FORMAT!r})"
        )
    model = DigitsClassifier()
    expected = {k: v.shape for k, v in model.state_dict().items()}
    found = {k: v.shape for k, v in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise ValueError(f"{path} does not match DigitsClassifier: missing {missing}, unexpected {unexpected}, wrong shapes {wrong}")
    if any(v.dtype != torch.float32 for v in tensors.values()):
        raise ValueError(f"{path} holds non-float32 tensors; DigitsClassifier weights are float32")
    model.load_state_dict(tensors)
    model.eval().requires_grad_(False)
    return model, metadata


def _check_images(x: Tensor, name: str, min_rows: int = 1) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim != 4 or x.shape[1:] != (1, 8, 8) or x.shape[0] < min_rows:
        raise ValueError(f"{name} must have shape (B, 1, 8, 8) with B >= {min_rows}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


@dataclasses.dataclass(frozen=True, eq=False)
class DigitsJudge:
    """Evaluates 8x8 digits in [-1, 1] with the shipped classifier. ``DigitsJudge.load()``.

    - ``features(x)``: the 64-d penultimate layer (B, 64) float32; differentiable w.r.t. x (the
      classifier's parameters are frozen), so it can also serve as a fixed feature network in a loss.
    - ``fd(x_gen, x_ref)``: Frechet distance between the features of two image sets.
    - ``real_floor()``: FD between the two fixed halves of the digits (``data.digits_halves()``).
    - ``fd_with_floor(x_gen)``: FD of x_gen against half B, beside ``real_floor()``; generate as many
      images as a half (about 900) so value and floor have the same small-sample bias.
    - ``class_accuracy(x_gen, labels)``: fraction of x_gen the classifier assigns to ``labels``.
    """

    model: DigitsClassifier
    metadata: dict[str, str]

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> DigitsJudge:
        return cls(*load_digits_classifier(path))

    def features(self, x: Tensor) -> Tensor:
        _check_images(x, "x")
        return self.model.features(x.float())

    def predict(self, x: Tensor) -> Tensor:
        """Arg-max class (B,) int64."""
        _check_images(x, "x")
        with torch.no_grad():
            return self.model(x.float()).argmax(dim=1)

    def class_accuracy(self, x_gen: Tensor, labels: Tensor) -> float:
        _check_images(x_gen, "x_gen")
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (x_gen.shape[0],):
            raise ValueError(f"labels must be an int64 Tensor of shape ({x_gen.shape[0]},)")
        return (self.predict(x_gen) == labels).double().mean().item()

    def fd(self, x_gen: Tensor, x_ref: Tensor) -> float:
        _check_images(x_gen, "x_gen", min_rows=2)
        _check_images(x_ref, "x_ref", min_rows=2)
        with torch.no_grad():
            return frechet_distance(self.features(x_gen), self.features(x_ref))

    def real_floor(self) -> float:
        (x_a, _), (x_b, _) = data.digits_halves()
        return self.fd(x_a, x_b)

    def fd_with_floor(self, x_gen: Tensor) -> MetricWithFloor:
        _, (x_b, _) = data.digits_halves()
        return MetricWithFloor(self.fd(x_gen, x_b), self.real_floor())


def psnr(x: Tensor, x_ref: Tensor, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch: 10 log10(data_range^2 / mean (x - x_ref)^2),
    data_range the peak-to-peak range of the data (2 for images in [-1, 1]). +inf for identical inputs."""
    _check_pair(x.flatten(1), x_ref.flatten(1))
    if x.shape != x_ref.shape:
        raise ValueError(f"x and x_ref must have the same shape, got {tuple(x.shape)} and {tuple(x_ref.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    mse = (x.double() - x_ref.double()).pow(2).mean()
    return float(10 * torch.log10(data_range**2 / mse))
