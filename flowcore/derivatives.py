"""Directional derivatives of a network: the JVP  d/de f(x + e xdot) |_{e=0} = J_f(x) xdot.

MeanFlow needs du/dt = J_u(z, t, s) (v, 1, 0) (Geng et al. 2025); TVM needs dF/ds with gradient
through it (Zhou et al. 2025); sCM needs df/dt of the student (Lu & Song 2025). Three back ends, one
signature ``(fn, primals, tangents) -> (f(primals), J_f tangents)``:

- ``Derivative.JVP``: exact forward-mode AD with ``torch.func.jvp``. The primal output carries the
  gradient, so a loss needs no second forward.
- ``Derivative.FUSED``: the same, with attention computed by flowcore's fused JVP-attention op
  (forward and tangent in one tiled pass) instead of SDPA's MATH path.
- ``Derivative.FD``: finite differences, central  (f(x + h xdot) - f(x - h xdot)) / 2h  (error O(h^2))
  or forward  (f(x + h xdot) - f(x)) / h  (error O(h), one extra evaluation, reuses the primal).
  The perturbed inputs and the difference quotient are formed in fp64, and every evaluation
  starts from the same RNG state, so dropout masks match.

A ``None`` tangent holds that input fixed. The derivative is detached unless
``grad_through_tangent=True`` (then it is differentiable with respect to the parameters).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from flowcore.attention import AttentionBackend, attention_backend


class Derivative(enum.Enum):
    JVP = "jvp"
    FUSED = "fused"
    FD = "fd"

    def __str__(self) -> str:
        return self.value


class FDScheme(enum.Enum):
    CENTRAL = "central"
    FORWARD = "forward"


def _check_pairs(primals: Sequence[Tensor], tangents: Sequence[Tensor | None]) -> None:
    if len(primals) != len(tangents):
        raise ValueError(f"got {len(primals)} primals but {len(tangents)} tangents")
    if all(t is None for t in tangents):
        raise ValueError("at least one tangent must be given (None holds an input fixed)")
    for i, (p, t) in enumerate(zip(primals, tangents)):
        if t is not None and t.shape != p.shape:
            raise ValueError(f"tangent {i} has shape {tuple(t.shape)} but its primal has shape {tuple(p.shape)}")


def _detach_tree(tree: Any) -> Any:
    return pytree.tree_map(lambda x: x.detach() if isinstance(x, Tensor) else x, tree)


def jvp(
    fn: Callable[..., Any],
    primals: Sequence[Tensor],
    tangents: Sequence[Tensor | None],
    *,
    grad_through_tangent: bool = False,
) -> tuple[Any, Any]:
    """Exact (f(x), J_f(x) xdot) by ``torch.func.jvp``; inputs with a ``None`` tangent are held fixed."""
    _check_pairs(primals, tangents)
    moving = [i for i, t in enumerate(tangents) if t is not None]

    def restricted(*args: Tensor) -> Any:
        full = list(primals)
        for i, a in zip(moving, args):
            full[i] = a
        return fn(*full)

    out, dout = torch.func.jvp(
        restricted,
        tuple(primals[i] for i in moving),
        tuple(tangents[i].to(primals[i].dtype) for i in moving),
    )
    return out, (dout if grad_through_tangent else _detach_tree(dout))


def _rng_states() -> list[Tensor]:
    states = [torch.get_rng_state()]
    if torch.cuda.is_available():
        states.extend(torch.cuda.get_rng_state_all())
    return states


def _set_rng_states(states: list[Tensor]) -> None:
    torch.set_rng_state(states[0])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states[1:])


def _shift(primals: Sequence[Tensor], tangents: Sequence[Tensor | None], h: float) -> list[Tensor]:
    """x + h xdot, formed in fp64 and rounded once to the input's dtype."""
    return [p if t is None else (p.double() + h * t.double()).to(p.dtype) for p, t in zip(primals, tangents)]


def finite_difference(
    fn: Callable[..., Any],
    primals: Sequence[Tensor],
    tangents: Sequence[Tensor | None],
    *,
    step: float = 1e-3,
    scheme: FDScheme = FDScheme.CENTRAL,
    grad_through_tangent: bool = False,
) -> tuple[Any, Any]:
    """(f(x), D_h f(x) xdot) by a central or forward difference of step ``step`` (see module doc)."""
    _check_pairs(primals, tangents)
    if not step > 0:
        raise ValueError(f"finite-difference step must be positive, got {step}")
    start = _rng_states()
    out = fn(*primals)
    after = _rng_states()
    with torch.set_grad_enabled(grad_through_tangent and torch.is_grad_enabled()):
        _set_rng_states(start)
        f_plus = fn(*_shift(primals, tangents, step))
        if scheme is FDScheme.CENTRAL:
            _set_rng_states(start)
            f_minus = fn(*_shift(primals, tangents, -step))
            denom = 2 * step
        else:
            f_minus = out if grad_through_tangent else _detach_tree(out)
            denom = step
    _set_rng_states(after)
    dout = pytree.tree_map(lambda a, b: ((a.double() - b.double()) / denom).to(a.dtype), f_plus, f_minus)
    return out, dout


@dataclass(frozen=True)
class DirectionalDerivative:
    """One switchable operator: ``DirectionalDerivative(Derivative[args.derivative.upper()])``."""

    method: Derivative = Derivative.JVP
    fd_step: float = 1e-3
    fd_scheme: FDScheme = FDScheme.FORWARD

    def __call__(
        self,
        fn: Callable[..., Any],
        primals: Sequence[Tensor],
        tangents: Sequence[Tensor | None],
        *,
        grad_through_tangent: bool = False,
    ) -> tuple[Any, Any]:
        if self.method is Derivative.FD:
            return finite_difference(fn, primals, tangents, step=self.fd_step, scheme=self.fd_scheme, grad_through_tangent=grad_through_tangent)
        if self.method is Derivative.FUSED:
            with attention_backend(AttentionBackend.FUSED):
                return jvp(fn, primals, tangents, grad_through_tangent=grad_through_tangent)
        return jvp(fn, primals, tangents, grad_through_tangent=grad_through_tangent)
