"""Data-parallel training under ``torchrun``: process group, seeding, replicas and gradient averaging.

Why not ``DistributedDataParallel``: flowcore's losses take ``torch.func.jvp`` through the model, and
DDP does not survive that (measured with 2 gloo processes, torch 2.13):

- ``ddp.module`` inside the jvp never arms DDP's reducer, so no all-reduce happens: every rank steps
  with its own gradient and the replicas drift apart, silently.
- The wrapper itself inside the jvp averages the first step's gradients correctly, but its second
  forward rebuilds the gradient buckets inside the functorch transform and fails ("Cannot access
  data pointer of Tensor that doesn't have storage"). Its default buffer broadcast fails too as
  soon as the model has a buffer ("attempted to call in-place operation (aten::copy_) that would
  mutate a captured Tensor"), and ``find_unused_parameters`` / ``static_graph`` route the output
  through an ``autograd.Function`` without ``setup_context``, which functorch rejects.

So replicas are plain modules: :func:`prepare_model` copies rank 0's weights to every rank, and
:func:`sync_gradients` (called by ``train_loop`` after every backward) replaces each gradient by its
mean over ranks with explicit all-reduces. This does not depend on how the loss reached the
parameters (jvp primal or tangent, finite differences, several forwards), so a recipe needs to know
nothing about it.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable

import numpy as np
import torch
import torch.distributed as tdist
from torch import Tensor, nn


@dataclasses.dataclass(frozen=True)
class Dist:
    """This process's place in the job: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(device: str | torch.device | None = None) -> Dist:
    """Join the ``torchrun`` process group, or describe a single process when not under ``torchrun``.

    Reads RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/MASTER_PORT through ``env://``). The
    backend is nccl when the device is CUDA, gloo otherwise. Without ``device``, each process takes
    ``cuda:LOCAL_RANK`` when CUDA is available and the CPU otherwise.
    """
    under_torchrun = "WORLD_SIZE" in os.environ and "RANK" in os.environ
    rank = _env_int("RANK") if under_torchrun else 0
    world_size = _env_int("WORLD_SIZE") if under_torchrun else 1
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist = Dist(rank=rank, world_size=world_size, device=device)
    if world_size > 1 and not tdist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        tdist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)
    return dist


def close_distributed() -> None:
    """Wait for every rank, then leave the process group (call on every rank at the end of a run).

    The barrier matters: a rank that tears down its gloo group and exits while rank 0 is still
    evaluating can abort in C++ ("terminate called without an active exception")."""
    if tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed torch (CPU and CUDA), numpy and ``random`` with a stream distinct for each (seed, rank).

    The per-rank seed is ``numpy.random.SeedSequence([seed, rank])``'s first 32-bit word (torch's
    CPU generator only uses the low 32 bits of a seed, so ``seed + rank * 2**32`` would collide).
    Ranks draw different data; model replicas are made identical by :func:`prepare_model` (and EMA
    copies by ``train_loop``), not by the seed.
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    rank_seed = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    torch.manual_seed(rank_seed)
    random.seed(rank_seed)
    np.random.seed(rank_seed)


def prepare_model(model: nn.Module, dist: Dist) -> nn.Module:
    """``model`` on ``dist.device`` with rank 0's parameters and buffers on every rank (in place).

    The returned module is ``model`` itself, not a wrapper: call it anywhere, also inside
    ``torch.func.jvp``. Gradients are averaged by :func:`sync_gradients`, which ``train_loop`` calls.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if dist.world_size > 1 and not tdist.is_initialized():
        raise RuntimeError(f"world_size is {dist.world_size} but no process group exists; use init_distributed()")
    model = model.to(dist.device)
    broadcast_module(model)
    return model


def sync_gradients(params: Iterable[Tensor], bucket_bytes: int = 32 * 2**20) -> None:
    """g <- (1 / world_size) sum_ranks g for every parameter, in place (no-op in a single process).

    With a per-rank mean loss this gives the gradient of the mean over the concatenated batch. A
    parameter without gradient on some ranks counts as a zero gradient there; one without gradient
    on every rank keeps ``grad = None`` (as in a single process). Gradients are all-reduced in flat
    buckets of at most ``bucket_bytes`` per dtype. Collective: every rank calls it with the same
    parameters in the same order.
    """
    if world()[1] == 1:
        return
    params = list(params)
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=_collective_device())
    tdist.all_reduce(has_grad, op=tdist.ReduceOp.MAX)
    grads = []
    for p, used in zip(params, has_grad.tolist()):
        if used:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    world_size = tdist.get_world_size()
    buckets: dict[torch.dtype, list[Tensor]] = {}
    sizes: dict[torch.dtype, int] = {}
    for g in grads:
        buckets.setdefault(g.dtype, []).append(g)
        sizes[g.dtype] = sizes.get(g.dtype, 0) + g.numel() * g.element_size()
        if sizes[g.dtype] >= bucket_bytes:
            _all_reduce_mean_into(buckets.pop(g.dtype), world_size)
            sizes.pop(g.dtype)
    for bucket in buckets.values():
        _all_reduce_mean_into(bucket, world_size)


def _all_reduce_mean_into(grads: list[Tensor], world_size: int) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_collective_device())
    tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
    flat /= world_size
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def _collective_device() -> torch.device:
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def world() -> tuple[int, int]:
    """(rank, world_size) of the current process group, (0, 1) without one."""
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the one that writes files."""
    return world()[0] == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if world()[1] > 1:
        tdist.barrier()


def all_gather_tensor(tensor: Tensor) -> list[Tensor]:
    """Every rank's copy of ``tensor`` (same shape and dtype on all ranks), on the CPU, by rank."""
    if world()[1] == 1:
        return [tensor.detach().cpu()]
    local = tensor.detach().to(_collective_device())
    parts = [torch.empty_like(local) for _ in range(tdist.get_world_size())]
    tdist.all_gather(parts, local)
    return [p.cpu() for p in parts]


def all_reduce_mean(values: Tensor) -> Tensor:
    """Mean over ranks of ``values`` (float64 on the CPU), identical on every rank."""
    values = values.detach().to(torch.float64)
    if world()[1] == 1:
        return values.cpu()
    local = values.to(_collective_device())
    tdist.all_reduce(local, op=tdist.ReduceOp.SUM)
    return (local / tdist.get_world_size()).cpu()


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank."""
    if world()[1] == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            staged = tensor.detach().to(_collective_device())
            tdist.broadcast(staged, src=0)
            tensor.copy_(staged)


def fingerprint(tensors: Iterable[Tensor | None]) -> Tensor:
    """Per tensor (sum, sum of squares) in float64: equal on all ranks when the tensors are replicas."""
    rows = [
        torch.zeros(2, dtype=torch.float64)
        if t is None
        else torch.stack([t.detach().double().sum(), t.detach().double().square().sum()]).cpu()
        for t in tensors
    ]
    return torch.stack(rows) if rows else torch.zeros(0, 2, dtype=torch.float64)


def assert_replicas_agree(tensors: Iterable[Tensor | None], what: str, hint: str = "", rtol: float = 1e-6) -> None:
    """Raise RuntimeError on every rank when ``tensors`` differ between ranks (checked by fingerprint).

    Collective: every rank must call it with the same number of tensors.
    """
    if world()[1] == 1:
        return
    prints = all_gather_tensor(fingerprint(tensors))
    scale = prints[0].abs().max().clamp_min(1e-30)
    worst = max(((p - prints[0]).abs().max() / scale).item() if p.numel() else 0.0 for p in prints)
    if worst > rtol:
        raise RuntimeError(f"{what} differ across ranks (relative difference {worst:.2e}). {hint}".strip())
