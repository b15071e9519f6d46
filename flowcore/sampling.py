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


StreamField = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""(z_pix, z_lat, t_pix, t_lat) -> (v_pix, v_lat): the velocities of a two-stream model, times (B,)."""


def cascaded_stream_grids(steps: int) -> tuple[Tensor, Tensor]:
    """Latent Forcing's two-phase sampling schedule (Baade et al. 2026, arXiv 2602.11401, official
    ``get_generate_timesteps`` for the cascaded modes), in flowcore time, as (t_pix, t_lat) grids of
    steps + 1 points, k = steps / 2:

        steps 1..k:      t_lat 1 -> 0 evenly, t_pix = 1   (the latent is generated; pixels stay pure noise)
        steps k+1..2k:   t_pix 1 -> 0 evenly, t_lat = 0   (the pixels are generated beside the clean latent)

    The paper's grids (data at 1) are 1 - these; its default dino_max_t = 1 and gen_shift = 1 are used."""
    if steps < 2 or steps % 2:
        raise ValueError(f"the two-phase schedule needs an even number of steps >= 2, got {steps}")
    k = steps // 2
    ramp = torch.linspace(1.0, 0.0, k + 1)
    t_lat = torch.cat([ramp, torch.zeros(k)])
    t_pix = torch.cat([torch.ones(k), ramp])
    return t_pix, t_lat


def simultaneous_stream_grids(steps: int) -> tuple[Tensor, Tensor]:
    """Both streams on the same uniform grid 1 -> 0 (the joint-times model's schedule; the paper's
    shifted schedule with shift 1 and offset 0)."""
    grid = torch.linspace(1.0, 0.0, steps + 1)
    _check_grid(grid)
    return grid, grid.clone()


def _check_stream_grids(t_pix: Tensor, t_lat: Tensor) -> None:
    if t_pix.dim() != 1 or t_pix.shape != t_lat.shape or t_pix.numel() < 2:
        raise ValueError(f"stream grids must be 1-D of one length >= 2, got {tuple(t_pix.shape)} and {tuple(t_lat.shape)}")
    for name, g in (("t_pix", t_pix), ("t_lat", t_lat)):
        if g.min() < 0 or g.max() > 1 or bool((g[1:] > g[:-1]).any()):
            raise ValueError(f"the {name} grid must lie in [0, 1] and never increase (sampling runs from noise to data)")
    if not bool(((t_pix[1:] < t_pix[:-1]) | (t_lat[1:] < t_lat[:-1])).all()):
        raise ValueError("every step of a stream schedule must move at least one stream")


@torch.no_grad()
def stream_euler(field: StreamField, z_pix: Tensor, z_lat: Tensor, t_pix: Tensor, t_lat: Tensor) -> tuple[Tensor, Tensor]:
    """Euler on two streams with their own grids: z_i <- z_i + (t_i' - t_i) v_i(z_pix, z_lat, t_pix, t_lat).
    A stream whose time does not move in a step is left unchanged."""
    _check_stream_grids(t_pix, t_lat)
    for tp, sp, tl, sl in zip(t_pix[:-1], t_pix[1:], t_lat[:-1], t_lat[1:]):
        v_pix, v_lat = field(z_pix, z_lat, _full(z_pix, tp), _full(z_lat, tl))
        z_pix, z_lat = z_pix + (sp - tp).to(z_pix.dtype) * v_pix, z_lat + (sl - tl).to(z_lat.dtype) * v_lat
    return z_pix, z_lat


@torch.no_grad()
def stream_heun(field: StreamField, z_pix: Tensor, z_lat: Tensor, t_pix: Tensor, t_lat: Tensor) -> tuple[Tensor, Tensor]:
    """Heun on two streams (the official Latent Forcing sampler, arXiv 2602.11401): predictor
    z_i' = z_i + h_i v_i(z, t), corrector z_i + h_i (v_i(z, t) + v_i(z', t')) / 2, h_i = t_i' - t_i;
    the last step (into t_pix = t_lat = 0) is Euler, as in ``heun`` and the official code."""
    _check_stream_grids(t_pix, t_lat)
    last = t_pix.numel() - 2
    for i, (tp, sp, tl, sl) in enumerate(zip(t_pix[:-1], t_pix[1:], t_lat[:-1], t_lat[1:])):
        h_pix, h_lat = (sp - tp).to(z_pix.dtype), (sl - tl).to(z_lat.dtype)
        v_pix, v_lat = field(z_pix, z_lat, _full(z_pix, tp), _full(z_lat, tl))
        p_pix, p_lat = z_pix + h_pix * v_pix, z_lat + h_lat * v_lat
        if i == last:
            z_pix, z_lat = p_pix, p_lat
            continue
        w_pix, w_lat = field(p_pix, p_lat, _full(z_pix, sp), _full(z_lat, sl))
        z_pix, z_lat = z_pix + 0.5 * h_pix * (v_pix + w_pix), z_lat + 0.5 * h_lat * (v_lat + w_lat)
    return z_pix, z_lat
