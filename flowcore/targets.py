"""Regression targets, one function per identity, named after the math (flowcore convention: flow map
F(z_t, t, s) with s <= t and z_s = z_t + (s - t) F; F(z, t, t) is the instantaneous velocity).

Targets are returned without ``detach``: the caller decides what is stop-gradded (the papers detach
all of these, and ``flowcore.losses`` functions take the detached target).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

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
    _check_floor(t_floor)
    return (z - x_hat) / expand_time(t.clamp(min=t_floor, max=1.0), z)


def _check_floor(floor: float) -> None:
    """The clip of a time in a denominator must lie in (0, 1]: 0 divides by zero at the path's end."""
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"the clip of t (t_floor) must be in (0, 1], got {floor}")


def velocity_from_eps_prediction(z: Tensor, eps_hat: Tensor, t: Tensor, floor: float = 0.05) -> Tensor:
    """Velocity implied by a noise estimate on the linear path: x = (z - t eps) / (1 - t), so
    v = eps - x = (eps_hat - z) / clip(1 - t, floor, 1) (the eps-prediction arm of JiT's Table 2,
    Li & He 2025, arXiv 2511.13720). The clip keeps the division finite at the noise end t -> 1,
    as x-prediction's clip does at the data end t -> 0."""
    check_times(t, batch=z.shape[0])
    _check_floor(floor)
    return (eps_hat - z) / expand_time((1.0 - t).clamp(min=floor, max=1.0), z)


class Prediction(enum.Enum):
    """What a network outputs on the linear path z_t = (1 - t) x + t eps: the clean data x, the noise
    eps or the velocity v = eps - x (JiT, Li & He 2025, arXiv 2511.13720, Table 2)."""

    X = "x"
    EPS = "eps"
    V = "v"

    def __str__(self) -> str:
        return self.value


def velocity_from_prediction(prediction: Prediction, z: Tensor, out: Tensor, t: Tensor, floor: float = 0.05) -> Tensor:
    """The velocity eps - x implied by a network output ``out`` at (z_t, t): (z - x_hat)/clip(t) for x,
    (eps_hat - z)/clip(1 - t) for eps, ``out`` itself for v (each clip at ``floor``)."""
    if not isinstance(prediction, Prediction):
        raise TypeError(f"prediction must be a flowcore.targets.Prediction, got {prediction!r}")
    if prediction is Prediction.X:
        return velocity_from_x_prediction(z, out, t, floor)
    if prediction is Prediction.EPS:
        return velocity_from_eps_prediction(z, out, t, floor)
    return out


def velocity_network(model: Callable[..., Tensor], prediction: Prediction, floor: float = 0.05) -> Callable[..., Tensor]:
    """The network read as a velocity (or average-velocity) field: (z, t, s, *rest) -> the velocity implied by
    ``model(z, t, s, *rest)`` under ``prediction`` (``velocity_from_prediction``); a model with several heads
    (a tuple of outputs, as iMF's u and v) is read head by head. Under x-prediction a flow-map jump
    z_s = z - (t - s)(z - x_hat)/t = (s/t) z + (1 - s/t) x_hat, so the 1-step map z_1 -> x_hat(z_1, 1, 0)."""
    prediction = Prediction(prediction)

    def velocity(z: Tensor, t: Tensor, s: Tensor, *rest) -> Tensor | tuple[Tensor, ...]:
        out = model(z, t, s, *rest)
        if isinstance(out, tuple):
            return tuple(velocity_from_prediction(prediction, z, head, t, floor) for head in out)
        return velocity_from_prediction(prediction, z, out, t, floor)

    return velocity


def trajectory_average_velocity(z_t: Tensor, z_s: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """Flow-map target from two points of one ODE trajectory: F(z_t, t, s) = (z_t - z_s) / (t - s),
    s < t. With (t, s) = (1, 0) and the coupling (eps, x) of ``sampling.reflow_pairs`` this is
    rectified flow's one-step distillation target eps - x (Liu, Gong & Liu 2022, arXiv 2209.03003,
    Sec. 2.3: regress the one-step map onto the pairs of the k-rectified flow)."""
    check_times(t, s, batch=z_t.shape[0])
    if (s == t).any():
        raise ValueError("trajectory_average_velocity needs s < t on every row (the gap divides)")
    if z_t.shape != z_s.shape:
        raise ValueError(f"z_t shape {tuple(z_t.shape)} does not match z_s shape {tuple(z_s.shape)}")
    return (z_t - z_s) / expand_time(t - s, z_t)


def _check_alpha(alpha: float, low_open: bool) -> None:
    if not (0.0 < alpha <= 1.0 if low_open else 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must lie in {'(0, 1]' if low_open else '[0, 1]'}, got {alpha}")


def alphaflow_intermediate(z: Tensor, v: Tensor, t: Tensor, s: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """alpha-Flow's intermediate point (Zhang et al. 2025, arXiv 2510.20771): one Euler step of size
    dt = alpha (t - s) along v from z_t, i.e. (z_t - dt v, t - dt), with s <= t - dt <= t."""
    check_times(t, s, batch=z.shape[0])
    _check_alpha(alpha, low_open=False)
    dt = alpha * (t - s)
    return z - expand_time(dt, z) * v, t - dt


def alphaflow_target(v: Tensor, u_mid: Tensor, t: Tensor, s: Tensor, alpha: float) -> Tensor:
    """The alpha-Flow target (Zhang et al. 2025, arXiv 2510.20771, official loss code: (dt v + (t - dt - s) u') / (t - s)):

        u_tgt = alpha v + (1 - alpha) u(z_t - dt v, t - dt, s),   dt = alpha (t - s),

    with ``u_mid`` = u at ``alphaflow_intermediate`` (the caller evaluates it, without gradient),
    and u_tgt = v on the rows with s = t (flow matching rows). alpha = 1 is trajectory flow
    matching (u_tgt = v); as alpha -> 0, u_tgt = u + alpha (u_MF - u) + O(alpha^2) with
    u_MF = v - (t - s) du/dt the MeanFlow target, so the gradient of (1/alpha) ||u - sg(u_tgt)||^2
    tends to MeanFlow's, without a JVP. The paper's 1/alpha is the official code's weight alpha on
    these rows under the adaptive weight 1/(L + c), since L = O(alpha^2).
    """
    check_times(t, s, batch=v.shape[0])
    _check_alpha(alpha, low_open=True)
    if u_mid.shape != v.shape:
        raise ValueError(f"u_mid shape {tuple(u_mid.shape)} does not match v shape {tuple(v.shape)}")
    target = alpha * v + (1.0 - alpha) * u_mid
    return torch.where(expand_time(t == s, v), v, target)


def terminal_velocity(F: Tensor, dF_ds: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """The velocity of a flow map at its terminal time (Terminal Velocity Matching, Zhou et al. 2025,
    arXiv 2511.19797, eq. of the terminal velocity condition):

        d/ds f(z_t, t, s) = F(z_t, t, s) + (s - t) dF/ds,   f(z_t, t, s) = z_t + (s - t) F(z_t, t, s),

    which TVM matches to the velocity at the landing point, v(f(z_t, t, s), s) (its EMA-target
    network there, detached). The exact flow map makes the two equal for every s <= t; at s = t the
    condition is F(z, t, t) = v(z, t), flow matching's fixed point. TVM keeps the gradient through
    dF/ds (pass it from ``DirectionalDerivative(..., grad_through_tangent=True)``): nothing here is detached.
    """
    check_times(t, s, batch=F.shape[0])
    if dF_ds.shape != F.shape:
        raise ValueError(f"dF_ds shape {tuple(dF_ds.shape)} does not match F shape {tuple(F.shape)}")
    return F + expand_time(s - t, F) * dF_ds


def freeflow_prediction_target(v_landing: Tensor, dF_ds: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """FreeFlow's prediction target (Tong, Ma, Xie, Jaakkola 2025, arXiv 2511.19428, the prediction
    objective; data-free: z ~ N(0, I) at t = 1, jump delta = t - s):

        F_tgt = v(f, s) - (s - t) dF/ds,   f = z + (s - t) F(z, t, s)  (the student's own path),

    so that ||F - sg(F_tgt)||^2 = ||df/ds - v(f, s)||^2 at the current parameters: the residual
    F - F_tgt is the mismatch between the student's generating velocity df/ds = F + (s - t) dF/ds
    and the teacher's velocity ``v_landing`` = v(f, s) where the student lands (the paper's
    delta-form F_tgt = u(f, 1 - delta) - delta dF/d delta, with dF/d delta = -dF/ds). Unlike TVM's
    ``terminal_velocity`` the gradient flows through F only (detach the result). The exact flow map
    is the fixed point, F_tgt = F for every s <= t. It is also the Lagrangian consistency target of Meta Flow Maps
    (arXiv 2601.14430, the official ``lsd``; recipes/metaflow.py) with v the posterior velocity at the landing point."""
    check_times(t, s, batch=v_landing.shape[0])
    if dF_ds.shape != v_landing.shape:
        raise ValueError(f"dF_ds shape {tuple(dF_ds.shape)} does not match v_landing shape {tuple(v_landing.shape)}")
    return v_landing - expand_time(s - t, dF_ds) * dF_ds


def freeflow_correction_target(F: Tensor, v_fake: Tensor, v_teacher: Tensor) -> Tensor:
    """FreeFlow's correction (arXiv 2511.19428, the correction objective) as a regression target:
    F_tgt = F - (v_N - v), so that the gradient of (1/2)||F - sg(F_tgt)||^2 is (v_N - v)^T dF/dtheta,
    the paper's  grad_theta E[F(z, 1, 0)^T sg(v_N(I_r, r) - v(I_r, r))].

    Here F = F(z, 1, 0) is the student's one-step output (x_hat = z - F), I_r = (1 - r) sg(x_hat) + r n
    a noised student sample, v the teacher's velocity there and v_N the velocity of the *student's*
    noising marginals (an auxiliary network fitted by flow matching to student samples). It descends
    the KL between the student's and the teacher's noised marginals (score difference = velocity
    difference times -(1 - r)/r on the linear path; the positive weight is dropped, as in the paper's
    form). When the student's marginals are the teacher's, v_N = v and F_tgt = F."""
    if not F.shape == v_fake.shape == v_teacher.shape:
        raise ValueError(f"F, v_fake, v_teacher shapes differ: {tuple(F.shape)}, {tuple(v_fake.shape)}, {tuple(v_teacher.shape)}")
    return F - (v_fake - v_teacher)


def posterior_query_point(z: Tensor, t: Tensor, z_c: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The single noisy state (z*, t*) that carries the information of two independent noisy views of
    one x on the linear path, z = (1 - t) x + t eps and z_c = (1 - c) x + c n (the "GLASS" transform of
    Meta Flow Maps, Potaptchik et al. 2026, arXiv 2601.14430, official ``extract_posterior_velocity``):

        P = ((1 - c)/c)^2 + ((1 - t)/t)^2,   t* = 1 / (1 + sqrt(P)),
        z* = (1 - t*) [(1 - c)/c^2 z_c + (1 - t)/t^2 z] / P,

    so that p(x | z_t = z, z_c) = p(x | z_{t*} = z*) (Gaussian likelihoods multiply; precisions add).
    c = 1 (a pure-noise condition) gives back (z, t). Needs t, c in (0, 1]; computed in fp64."""
    check_times(t, batch=z.shape[0])
    check_times(c, batch=z.shape[0], name="c")
    if z_c.shape != z.shape:
        raise ValueError(f"z_c shape {tuple(z_c.shape)} does not match z shape {tuple(z.shape)}")
    if (t <= 0).any() or (c <= 0).any():
        raise ValueError("posterior_query_point needs t > 0 and c > 0 (at 0 the state is the data itself)")
    t64, c64 = t.double(), c.double()
    lam_t, lam_c = ((1 - t64) / t64) ** 2, ((1 - c64) / c64) ** 2
    precision = (lam_t + lam_c).clamp_min(1e-12)
    t_star = 1 / (1 + precision.sqrt())
    num = expand_time((1 - c64) / c64**2, z) * z_c.double() + expand_time((1 - t64) / t64**2, z) * z.double()
    z_star = expand_time((1 - t_star) / precision, z) * num
    return z_star.to(z.dtype), t_star.to(t.dtype)


def posterior_velocity(z: Tensor, t: Tensor, z_star: Tensor, t_star: Tensor, v_star: Tensor) -> Tensor:
    """Velocity at (z, t) of the flow whose data distribution is the posterior p(x | z_c) (Meta Flow
    Maps' distilled diagonal target, arXiv 2601.14430), from an unconditional velocity v* = v(z*, t*)
    at ``posterior_query_point``:  x_hat = E[x | z, z_c] = z* - t* v*  (Tweedie on the linear path),
    v = E[eps - x | z, z_c] = (z - x_hat) / t,  t > 0."""
    check_times(t, batch=z.shape[0])
    check_times(t_star, batch=z.shape[0], name="t_star")
    if not z.shape == z_star.shape == v_star.shape:
        raise ValueError(f"z, z_star, v_star shapes differ: {tuple(z.shape)}, {tuple(z_star.shape)}, {tuple(v_star.shape)}")
    if (t <= 0).any():
        raise ValueError("posterior_velocity needs t > 0")
    x_hat = z_star - expand_time(t_star, v_star) * v_star
    return (z - x_hat) / expand_time(t, z)


def gaussian_denoiser_scalings(t: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
    """The posterior mean and standard deviation of x given z_t = (1 - t) x + t eps when x ~ N(0, sigma_d^2 I):

        E[x | z_t] = c_skip(t) z_t,   c_skip = (1 - t) sigma_d^2 / ((1 - t)^2 sigma_d^2 + t^2),
        sd[x | z_t] = c_out(t),       c_out = sigma_d t / sqrt((1 - t)^2 sigma_d^2 + t^2),

    EDM's skip/out preconditioning (Karras et al. 2022, arXiv 2206.00364, Eq. 7) on flowcore's linear path
    without the consistency boundary: a denoiser x_hat = c_skip z_t + c_out G asks the network G for the
    residual from the best linear estimate in units of its error, an O(1) output at every t. At t = 0:
    (1, 0); at t = 1: (0, sigma_d). Shapes (B,); t in [0, 1]."""
    check_times(t)
    if sigma_data <= 0:
        raise ValueError(f"gaussian_denoiser_scalings needs sigma_data > 0, got {sigma_data}")
    a, b = sigma_data * (1.0 - t), t
    norm = a * a + b * b
    return sigma_data * a / norm, sigma_data * b / norm.sqrt()


def preconditioned_posterior_flow_map(z: Tensor, t: Tensor, z_star: Tensor, t_star: Tensor, out: Tensor, sigma_data: float) -> Tensor:
    """A flow map of the posterior flow (Meta Flow Maps) read from a preconditioned network output G:

        x_hat = c_skip(t*) z* + c_out(t*) G,   F(z, t, s) = (z - x_hat) / t,

    with (z*, t*) from ``posterior_query_point`` and the Gaussian-prior scalings of ``gaussian_denoiser_scalings``.
    G is the residual of x from its posterior mean given (z_t, z_c) under a N(0, sigma_d^2 I) prior, in units of
    that prior's posterior spread: a narrow posterior (small c) asks for an O(1) output rather than an output
    accurate to the posterior's width. With G = 0 the diagonal F(z, t, t) is the exact posterior velocity for
    Gaussian data N(0, sigma_d^2 I); F stays finite as t -> 0 (x_hat -> z at rate t). t > 0."""
    if not z.shape == z_star.shape == out.shape:
        raise ValueError(f"z, z_star, network output shapes differ: {tuple(z.shape)}, {tuple(z_star.shape)}, {tuple(out.shape)}")
    if (t <= 0).any():
        raise ValueError("preconditioned_posterior_flow_map needs t > 0")
    skip, scale = gaussian_denoiser_scalings(t_star, sigma_data)
    x_hat = expand_time(skip, z) * z_star + expand_time(scale, z) * out
    return (z - x_hat) / expand_time(t, z)


def consistency_skip_out(t: Tensor, sigma_data: float = 0.5, sigma_min: float = 0.002) -> tuple[Tensor, Tensor]:
    """The consistency models' skip/out parameterisation (Song et al. 2023, arXiv 2303.01469, App. C;
    EDM, Karras et al. 2022) moved onto flowcore's linear path, for f(z_t, t) = c_skip z_t + c_out F.

    In EDM's variables, x_sigma = x + sigma eps and f(x_sigma, sigma) = c_skip x_sigma + c_out F with
    c_skip = sigma_d^2 / ((sigma - sigma_min)^2 + sigma_d^2), c_out = sigma_d (sigma - sigma_min) / sqrt(sigma_d^2 + sigma^2),
    so f(x, sigma_min) = x. Converted constants: sigma = t / (1 - t), x_sigma = z_t / (1 - t), t_min =
    sigma_min / (1 + sigma_min), and f here is the point on the path at t_min, (1 - t_min) f_EDM (the
    flow map from t to t_min), so that the boundary condition reads f(z, t_min) = z. With
    A = sigma_d (1 - t) and B = (1 + sigma_min)(t - t_min) = t - sigma_min (1 - t):

        c_skip(t) = (1 - t_min) sigma_d A / (A^2 + B^2),   c_out(t) = (1 - t_min) sigma_d B / sqrt(A^2 + t^2),

    finite up to t = 1 (sigma = inf: c_skip = 0, c_out = sigma_d (1 - t_min)), and exactly (1, 0) at t = t_min.
    The network input needs no c_in: on the linear path z_t already has unit-order scale. Shapes (B,).
    """
    check_times(t)
    if sigma_data <= 0 or sigma_min <= 0:
        raise ValueError(f"consistency_skip_out needs sigma_data > 0 and sigma_min > 0, got {sigma_data}, {sigma_min}")
    t_min = sigma_min / (1.0 + sigma_min)
    if (t < t_min * (1.0 - 1e-6)).any():
        raise ValueError(f"consistency times must be >= t_min = sigma_min / (1 + sigma_min) = {t_min:.6g}, got {t.min().item():.6g}")
    t = t.clamp(min=t_min)  # a grid's t_min rounded to fp32 may fall a rounding error below the fp64 value
    a = sigma_data * (1.0 - t)
    b = (1.0 + sigma_min) * (t - t_min)
    scale = (1.0 - t_min) * sigma_data
    return scale * a / (a * a + b * b), scale * b / torch.sqrt(a * a + t * t)


def consistency_function(z: Tensor, F: Tensor, t: Tensor, sigma_data: float = 0.5, sigma_min: float = 0.002) -> Tensor:
    """f(z_t, t) = c_skip(t) z_t + c_out(t) F, the consistency model's map from t to t_min (see
    ``consistency_skip_out``; f(z, t_min) = z exactly). Its consistency target is the same function
    of the target network at the neighbouring, less noisy point of the trajectory:
    sg f_target(z_s, s) with z_s = a teacher ODE step from z_t (CD) or the same (x, eps) at s (CT)."""
    if F.shape != z.shape:
        raise ValueError(f"network output shape {tuple(F.shape)} does not match z shape {tuple(z.shape)}")
    c_skip, c_out = consistency_skip_out(t, sigma_data, sigma_min)
    return expand_time(c_skip.to(z.dtype), z) * z + expand_time(c_out.to(z.dtype), z) * F


def edm_output_of_linear_velocity(v: Tensor, z: Tensor, t: Tensor, sigma_data: float = 0.5) -> Tensor:
    """A linear-path velocity v(z_t, t) read as the raw output F of an EDM denoiser (Karras et al. 2022):
    the F with c_skip^E x_sigma + c_out^E F = x_hat = z_t - t v, i.e.

        F = (x_hat - c_skip^E x_sigma) / c_out^E,   x_sigma = z_t / (1 - t),  sigma = t / (1 - t),
        c_skip^E = sigma_d^2 / (sigma^2 + sigma_d^2),  c_out^E = sigma sigma_d / sqrt(sigma^2 + sigma_d^2).

    Consistency distillation starts the student from the teacher's weights (Song et al. 2023, arXiv
    2303.01469; openai/consistency_models copies the EDM teacher's parameters, its F, into the student):
    ``consistency_function(z, edm_output_of_linear_velocity(v, z, t), t)`` is that start for an FM
    teacher, and for sigma >> sigma_min it is the teacher's own denoiser (1 - t_min) x_hat. Written in t
    (finite for t in (0, 1)): c_skip^E x_sigma = sigma_d^2 (1 - t) z / (t^2 + sigma_d^2 (1 - t)^2),
    c_out^E = sigma_d t / sqrt(t^2 + sigma_d^2 (1 - t)^2). Differentiable in v, z and t."""
    check_times(t, batch=z.shape[0])
    if v.shape != z.shape:
        raise ValueError(f"velocity shape {tuple(v.shape)} does not match z shape {tuple(z.shape)}")
    if sigma_data <= 0:
        raise ValueError(f"sigma_data must be positive, got {sigma_data}")
    if (t <= 0).any() or (t >= 1).any():
        raise ValueError("edm_output_of_linear_velocity needs t in (0, 1): sigma = t / (1 - t) must be finite and positive")
    tt = expand_time(t.to(z.dtype), z)
    norm2 = tt * tt + sigma_data**2 * (1 - tt) ** 2
    skip_x_sigma = sigma_data**2 * (1 - tt) * z / norm2
    c_out = sigma_data * tt / torch.sqrt(norm2)
    return (z - tt * v - skip_x_sigma) / c_out


def trigflow_denoised(z: Tensor, F: Tensor, t: Tensor) -> Tensor:
    """sCM's consistency function (Lu & Song 2024, arXiv 2410.11081) in flowcore's units:
    x_hat = cos(theta) z - sin(theta) F,  theta = pi t / 2.

    TrigFlow's x_theta = cos(theta) x + sin(theta) sigma_d n is sigma_d z with z = cos(theta) x' + sin(theta) n
    the ``CosinePath`` point of x' = x / sigma_d at t = 2 theta / pi; so sCM's
    f = cos(theta) x_theta - sin(theta) sigma_d F(x_theta / sigma_d, theta) is sigma_d x_hat, and F's ideal
    value is TrigFlow's velocity dz/dtheta = cos(theta) n - sin(theta) x'."""
    check_times(t, batch=z.shape[0])
    theta = expand_time(0.5 * torch.pi * t, z)
    return torch.cos(theta) * z - torch.sin(theta) * F


def scm_tangent(z: Tensor, F: Tensor, dz_dtheta: Tensor, dF_dtheta: Tensor, t: Tensor, warmup: float = 1.0) -> Tensor:
    """sCM's tangent (Lu & Song 2024, arXiv 2410.11081, Alg. 1), in the units of ``trigflow_denoised``:

        g = -cos^2(theta) (F - dz/dtheta) - r sin(theta) cos(theta) (z + dF/dtheta),   theta = pi t / 2,

    i.e. cos(theta) times the total derivative d/dtheta of x_hat = cos z - sin F along the trajectory
    (sCT: dz/dtheta = cos(theta) n - sin(theta) x'; sCD: the teacher's velocity), with the tangent warm-up
    factor r in [0, 1] on the second term (r = 1 is the exact derivative). F, dF/dtheta are the network
    and its total theta-derivative (pass them detached: the target is stop-gradded). The exact consistency
    map gives g = 0 with the exact velocity. (The paper's g in x_theta units is sigma_d times this.)
    """
    check_times(t, batch=z.shape[0])
    if not z.shape == F.shape == dz_dtheta.shape == dF_dtheta.shape:
        raise ValueError(f"z, F, dz/dtheta, dF/dtheta shapes differ: {tuple(z.shape)}, {tuple(F.shape)}, {tuple(dz_dtheta.shape)}, {tuple(dF_dtheta.shape)}")
    if not 0.0 <= warmup <= 1.0:
        raise ValueError(f"tangent warm-up factor must lie in [0, 1], got {warmup}")
    theta = expand_time(0.5 * torch.pi * t, z)
    cos, sin = torch.cos(theta), torch.sin(theta)
    return -cos * cos * (F - dz_dtheta) - warmup * sin * cos * (z + dF_dtheta)


def normalize_tangent(g: Tensor, c: float = 0.1) -> Tensor:
    """g / (||g||_2 + c) per sample, the norm over every non-batch dimension (sCM's tangent
    normalisation, Lu & Song 2024, arXiv 2410.11081, c = 0.1; also rCM and Align Your Flow)."""
    if c <= 0:
        raise ValueError(f"tangent normalisation needs c > 0, got {c}")
    norm = g.flatten(1).norm(dim=1)
    return g / expand_time(norm + c, g)


def drifting_target(x: Tensor, drift: Tensor) -> Tensor:
    """Drifting Models' regression target (Deng et al. 2026, arXiv 2602.04770, Alg. 1): x + V(x), the
    generated sample (or its feature) moved along the drifting field; L = ||x - sg(x + V)||^2 has value
    ||V||^2 and gradient -2 V w.r.t. x. ``drift`` from ``flowcore.drifting.drifting_field``."""
    if x.shape != drift.shape:
        raise ValueError(f"drifting target: x {tuple(x.shape)} and the drift {tuple(drift.shape)} must have the same shape")
    return x + drift
