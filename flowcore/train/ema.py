"""Exponential moving averages of a model's weights, several decays at once."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn



def ema_name(decay: float) -> str:
    """The role name of the average with this decay, e.g. ``ema_0.999``."""
    return f"ema_{decay!r}"


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta after every optimizer step, for each decay d.

    The averages are fp32 copies of the model (whatever the model's dtype), excluded from autograd
    and kept in eval mode; buffers are copied, not averaged. They start equal to the model.
    """

    def __init__(self, model: nn.Module, decays: Sequence[float]) -> None:
        decays = tuple(float(d) for d in decays)
        if not decays:
            raise ValueError("decays must name at least one decay")
        if len(set(decays)) != len(decays):
            raise ValueError(f"decays must be distinct, got {decays}")
        for d in decays:
            if not 0.0 <= d < 1.0:
                raise ValueError(f"each decay must be in [0, 1), got {d}")
        self._averages: dict[float, nn.Module] = {}
        for d in decays:
            average = copy.deepcopy(model).float().eval()
            average.requires_grad_(False)
            self._averages[d] = average

    @property
    def decays(self) -> tuple[float, ...]:
        return tuple(self._averages)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step towards ``model``'s current weights (one fused ``lerp`` over all tensors)."""
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        for d, average in self._averages.items():
            pairs = list(average.named_parameters())
            missing = [name for name, _ in pairs if name not in params]
            if missing:
                raise ValueError(f"model has no parameter {missing[0]!r} that the EMA copy has")
            if pairs:
                torch._foreach_lerp_([a for _, a in pairs], [params[name].detach().to(a) for name, a in pairs], 1.0 - d)
            for name, b_avg in average.named_buffers():
                b_avg.copy_(buffers[name])

    def modules(self) -> dict[str, nn.Module]:
        """The averages by role name (``ema_<decay>``), for checkpoints and evaluation."""
        return {ema_name(d): m for d, m in self._averages.items()}

    def averaged(self, decay: float) -> nn.Module:
        """The average with this decay."""
        if float(decay) not in self._averages:
            raise KeyError(f"no EMA with decay {decay}; decays are {self.decays}")
        return self._averages[float(decay)]
