"""The training driver: loss, backward, rank-averaged gradients, clipping, step, EMA, checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from flowcore.train.checkpoint import checkpoint_info, load_checkpoint, save_checkpoint
from flowcore.train.distributed import (
    Dist,
    all_reduce_mean,
    assert_replicas_agree,
    broadcast_module,
    sync_gradients,
)
from flowcore.train.ema import EMA
from flowcore.train.files import to_jsonable

History = dict[str, list[float]]
LossFn = Callable[[int], tuple[Tensor, Mapping[str, float]]]

CHECKPOINT_NAME = "checkpoint.safetensors"
MODEL_ROLE, OPTIMIZER_NAME = "model", "optimizer"
# Config keys that may change between a run and its resumption without breaking exactness.
RESUME_MAY_DIFFER = ("steps", "resume", "out", "ckpt_every")


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or infinite loss (or gradient norm); the last good checkpoint is untouched."""


def config_differences(saved: Mapping, current: Mapping, may_differ: Collection[str]) -> list[str]:
    """Keys whose values differ between two JSON configs, as 'key: saved -> current' lines."""
    keys = sorted((set(saved) | set(current)) - set(may_differ))
    missing = "<absent>"
    return [
        f"{k}: {saved.get(k, missing)!r} -> {current.get(k, missing)!r}"
        for k in keys
        if saved.get(k, missing) != current.get(k, missing)
    ]


def _roles(model: nn.Module, ema: EMA | None, extra_modules: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if isinstance(model, DistributedDataParallel):
        raise TypeError(
            "model is a DistributedDataParallel wrapper, which breaks under torch.func.jvp; pass the plain "
            "module from prepare_model (train_loop averages the gradients over ranks itself)"
        )
    roles = {MODEL_ROLE: model, **(ema.modules() if ema else {})}
    for name, module in extra_modules.items():
        if name in roles:
            raise ValueError(f"extra_modules name {name!r} clashes with a built-in role ({', '.join(roles)})")
        roles[name] = module
    return roles


def _record(history: History, step: int, values: Mapping[str, float]) -> None:
    """Append this step's values; every list stays aligned with the step index (NaN where absent)."""
    for key in set(history) | set(values):
        column = history.setdefault(key, [])
        column.extend([math.nan] * (step - len(column)))
        column.append(values.get(key, math.nan))


def _step_values(loss: Tensor, logs: Mapping[str, float]) -> dict[str, float]:
    """Loss and logs averaged over ranks (one all-reduce), so every rank sees the same numbers."""
    names = sorted(k for k in logs if k != "loss")
    local = [loss.item()]
    for k in names:
        try:
            local.append(float(logs[k]))
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"log {k!r} must be a number or a one-element tensor, got {type(logs[k]).__name__}") from None
    mean = all_reduce_mean(torch.tensor(local, dtype=torch.float64)).tolist()
    return {"loss": mean[0], **dict(zip(names, mean[1:]))}


def _last_good(path: Path, step: int | None) -> str:
    return f"last good checkpoint: {path} (step {step})" if step is not None else "no checkpoint written yet"


def _check_loss(loss: Tensor, step: int) -> None:
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        raise TypeError(f"loss_fn must return a scalar tensor as its loss, got {type(loss).__name__} at step {step}")
    if not loss.requires_grad:
        raise ValueError(f"the loss at step {step} does not require grad: it is not connected to the model's parameters")


def train_loop(
    *,
    loss_fn: LossFn,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: int,
    out: str | Path,
    config: Mapping,
    dist: Dist,
    ema: EMA | None = None,
    extra_modules: Mapping[str, nn.Module] = {},
    resume: bool = False,
    ckpt_every: int = 500,
    grad_clip: float | None = None,
    lr_schedule: Callable[[int], float] | None = None,
    desc: str = "",
    resume_may_differ: Collection[str] = RESUME_MAY_DIFFER,
) -> History:
    """Run optimizer steps ``start .. steps - 1`` and return the loss history of steps 0 .. steps - 1.

    Each step: ``loss, logs = loss_fn(step)``; the loss (mean over ranks) must be finite, else
    NonFiniteLossError naming the step (no checkpoint is written, the last good one stays); then
    zero_grad, backward, gradients averaged over ranks (``sync_gradients``: an explicit all-reduce,
    correct whatever transform, e.g. ``torch.func.jvp``, the loss used), optional clipping of the
    global gradient norm to ``grad_clip``, optional learning rate ``lr = initial_lr * lr_schedule(step)`` per
    parameter group, optimizer step, EMA update. History holds per step the loss and every log
    value (means over ranks; a log named "loss" is the loss), plus "lr" and "grad_norm" when used.

    Checkpoints go to ``out/checkpoint.safetensors`` every ``ckpt_every`` steps and at the end, with
    roles "model", the EMA roles and ``extra_modules``, and the optimizer as "optimizer". With
    ``resume=True`` the run continues from that file exactly (same RNG draws, same losses); it is an
    error if the file is missing or its config differs in a key outside ``resume_may_differ``.
    The data must be drawn inside ``loss_fn`` from the global RNGs for the resume to be exact.
    """
    if steps < 1 or ckpt_every < 1:
        raise ValueError(f"steps and ckpt_every must be >= 1, got steps={steps}, ckpt_every={ckpt_every}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
    ckpt_path = Path(out) / CHECKPOINT_NAME
    roles = _roles(model, ema, extra_modules)
    optimizers = {OPTIMIZER_NAME: optimizer}
    config = to_jsonable(config, "config")
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])

    history: History = {}
    start, last_good = 0, None
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"resume=True but there is no checkpoint at {ckpt_path}; run without resume to start fresh")
        info = checkpoint_info(ckpt_path)
        differences = config_differences(info.config, config, resume_may_differ)
        if differences:
            raise ValueError(f"cannot resume from {ckpt_path}: the config differs in " + "; ".join(differences))
        load_checkpoint(ckpt_path, modules=roles, optimizers=optimizers)
        start, last_good, history = info.step, info.step, {k: list(v) for k, v in info.history.items()}
    else:
        for module in roles.values():
            broadcast_module(module)

    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with tqdm(total=steps, initial=start, desc=desc or None, unit="step", disable=not dist.is_main, dynamic_ncols=True) as bar:
        for step in range(start, steps):
            loss, logs = loss_fn(step)
            _check_loss(loss, step)
            values = _step_values(loss, logs)
            if not math.isfinite(values["loss"]):
                raise NonFiniteLossError(f"non-finite loss {values['loss']} at step {step}; {_last_good(ckpt_path, last_good)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sync_gradients(params)
            if grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, grad_clip).item()
                if not math.isfinite(norm):
                    where = _last_good(ckpt_path, last_good)
                    raise NonFiniteLossError(f"non-finite gradient norm {norm} at step {step}; {where}")
                values["grad_norm"] = norm
            if lr_schedule is not None:
                factor = float(lr_schedule(step))
                if not (math.isfinite(factor) and factor >= 0):
                    raise ValueError(f"lr_schedule({step}) must be a finite factor >= 0, got {factor}")
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
                values["lr"] = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if ema is not None:
                ema.update(model)
            _record(history, step, values)
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4g}", refresh=False)
            done = step + 1
            if done % ckpt_every == 0 or done == steps:
                every = [p for m in roles.values() for p in m.parameters()]
                assert_replicas_agree(every, f"parameters after step {step}", "A replica was updated differently on some rank.")
                save_checkpoint(ckpt_path, modules=roles, optimizers=optimizers, step=done, config=config, history=history)
                last_good = done
    return history
