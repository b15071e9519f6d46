"""One safetensors file per checkpoint: every role's weights, optimizer states, step, config, loss
history and every rank's RNG states. Nothing is pickled; non-tensor parts are JSON in the metadata.

Layout (tensor keys):
    module/<role>/<state_dict key>          weights and buffers of each named module
    optim/<name>/<param index>/<state key>  tensor state of each named optimizer
    rng/<rank>/torch | cuda/<i> | numpy | python   RNG states, int64 (floats stored by their bits)
Metadata: flowcore=checkpoint, version, step, world_size, roles, config, history, optimizers
(param_groups and non-tensor state), checksums (blake2b of every tensor's bytes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from flowcore.train.distributed import all_gather_tensor, barrier, world
from flowcore.train.files import atomic_write, dumps

FORMAT_KEY, FORMAT_VALUE, VERSION = "flowcore", "checkpoint", "1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded: corrupt, foreign, or not matching the modules given."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint carries besides tensors: the next step to run, the config, the loss history."""

    step: int
    config: dict[str, Any]
    history: dict[str, list[float]]


# ----------------------------------------------------------------------------- RNG states


def _float_bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _bits_float(n: int) -> float:
    return struct.unpack("<d", struct.pack("<q", n))[0]


def rng_state() -> dict[str, Tensor]:
    """This process's RNG states as int64 tensors: torch CPU, each CUDA device, numpy, ``random``."""
    state = {"torch": torch.get_rng_state().to(torch.int64)}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda/{i}"] = s.to(torch.int64)
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    if kind != "MT19937":
        raise CheckpointError(f"unsupported numpy bit generator {kind}")
    state["numpy"] = torch.tensor([*keys.tolist(), pos, has_gauss, _float_bits(cached)], dtype=torch.int64)
    version, internal, gauss_next = random.getstate()
    tail = [version, gauss_next is not None, _float_bits(gauss_next or 0.0)]
    state["python"] = torch.tensor([*internal, *tail], dtype=torch.int64)
    return state


def set_rng_state(state: Mapping[str, Tensor]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    cuda = sorted((k for k in state if k.startswith("cuda/")), key=lambda k: int(k.split("/")[1]))
    if cuda:
        torch.cuda.set_rng_state_all([state[k].to(torch.uint8) for k in cuda])
    n = state["numpy"].tolist()
    np.random.set_state(("MT19937", np.array(n[:-3], dtype=np.uint32), n[-3], n[-2], _bits_float(n[-1])))
    p = state["python"].tolist()
    random.setstate((p[-3], tuple(p[:-3]), _bits_float(p[-1]) if p[-2] else None))


# ----------------------------------------------------------------------------- save


def _checksum(t: Tensor) -> str:
    raw = t.detach().reshape(-1).contiguous().view(torch.uint8).numpy()
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{kind} names must be non-empty strings without '/', got {name!r}")


def _module_tensors(role: str, module: nn.Module) -> dict[str, Tensor]:
    tensors = {}
    for key, value in module.state_dict().items():
        if not isinstance(value, Tensor):
            raise TypeError(f"module {role!r} has a non-tensor state entry {key!r}")
        tensors[f"module/{role}/{key}"] = value.detach().cpu().contiguous().clone()
    return tensors


def _optimizer_parts(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, plain_state = {}, {}
    for index, param_state in sd["state"].items():
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{name}/{index}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                plain_state.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": plain_state}


def save_checkpoint(
    path: str | Path,
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    step: int,
    config: Mapping,
    history: Mapping[str, list[float]] | None = None,
) -> None:
    """Write the checkpoint atomically from rank 0. Collective: call it on every rank.

    Every rank's RNG states are gathered so rank 0 writes them all and each rank can restore its own.
    A crash at any moment leaves the previous file at ``path`` intact (see ``atomic_write``).
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    for kind, names in (("module", modules), ("optimizer", optimizers)):
        for name in names:
            _check_name(kind, name)
    rank, world_size = world()
    local_rng = rng_state()
    gathered = {key: all_gather_tensor(value) for key, value in local_rng.items()}
    if rank == 0:
        tensors: dict[str, Tensor] = {}
        for role, module in modules.items():
            tensors.update(_module_tensors(role, module))
        optim_meta = {}
        for name, optimizer in optimizers.items():
            optim_tensors, optim_meta[name] = _optimizer_parts(name, optimizer)
            tensors.update(optim_tensors)
        for key, per_rank in gathered.items():
            for r, value in enumerate(per_rank):
                tensors[f"rng/{r}/{key}"] = value
        metadata = {
            FORMAT_KEY: FORMAT_VALUE,
            "version": VERSION,
            "step": str(step),
            "world_size": str(world_size),
            "roles": json.dumps(list(modules)),
            "config": dumps(config, "config"),
            "history": dumps(history or {}, "history"),
            "optimizers": dumps(optim_meta, "optimizer state"),
            "checksums": json.dumps({k: _checksum(v) for k, v in tensors.items()}),
        }
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    barrier()


# ----------------------------------------------------------------------------- load


@dataclasses.dataclass(frozen=True)
class _File:
    path: Path
    metadata: dict[str, str]
    tensors: dict[str, Tensor]

    def json(self, key: str) -> Any:
        try:
            return json.loads(self.metadata[key])
        except (KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{self.path}: metadata entry {key!r} is missing or not JSON ({exc})") from None

    def section(self, prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def _check_format(path: Path, metadata: Mapping[str, str]) -> None:
    if metadata.get(FORMAT_KEY) != FORMAT_VALUE:
        raise CheckpointError(
            f"{path} is a safetensors file but not a flowcore checkpoint "
            f"(metadata {FORMAT_KEY!r} is {metadata.get(FORMAT_KEY)!r}, expected {FORMAT_VALUE!r})"
        )
    if metadata.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {metadata.get('version')!r}, this flowcore reads {VERSION!r}")


def _read(path: str | Path) -> _File:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            _check_format(path, metadata)
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated: not a readable safetensors file ({exc})") from None
    file = _File(path, metadata, tensors)
    checksums = file.json("checksums")
    for key in sorted(set(checksums) | set(tensors)):
        if key not in tensors or key not in checksums:
            raise CheckpointError(f"{path} is corrupt: tensor {key!r} is missing or has no checksum")
        if _checksum(tensors[key]) != checksums[key]:
            raise CheckpointError(f"{path} is corrupt: checksum mismatch in tensor {key!r}")
    return file


def _match_module(file: _File, role: str, module: nn.Module, exact_dtype: bool) -> dict[str, Tensor]:
    """The state dict of ``role`` checked against ``module``: same keys, shapes (and dtypes)."""
    roles = file.json("roles")
    if role not in roles:
        raise CheckpointError(f"{file.path} has no role {role!r} (roles: {', '.join(roles) or 'none'})")
    saved = file.section(f"module/{role}/")
    expected = module.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"role {role!r}: keys missing from the checkpoint {missing}, unexpected keys {unexpected}")
    for key, value in expected.items():
        if saved[key].shape != value.shape:
            raise CheckpointError(
                f"role {role!r}, key {key!r}: checkpoint shape {tuple(saved[key].shape)}, module shape {tuple(value.shape)}"
            )
        if exact_dtype and saved[key].dtype != value.dtype:
            raise CheckpointError(f"role {role!r}, key {key!r}: checkpoint dtype {saved[key].dtype}, module dtype {value.dtype}")
    return saved


def _restore_tuples(saved: Any, template: Any) -> Any:
    """JSON turned the optimizer's tuples (e.g. Adam's betas) into lists; give them back their type."""
    return tuple(saved) if isinstance(template, tuple) and isinstance(saved, list) else saved


def _match_optimizer(file: _File, name: str, optimizer: torch.optim.Optimizer) -> dict:
    """The state dict of optimizer ``name``, in ``optimizer.load_state_dict`` form, checked against it."""
    meta = file.json("optimizers")
    if name not in meta:
        raise CheckpointError(f"{file.path} has no optimizer {name!r} (optimizers: {', '.join(meta) or 'none'})")
    groups, current = meta[name]["param_groups"], optimizer.param_groups
    sizes, current_sizes = [len(g["params"]) for g in groups], [len(g["params"]) for g in current]
    if sizes != current_sizes:
        raise CheckpointError(f"optimizer {name!r}: checkpoint has parameter groups of sizes {sizes}, optimizer {current_sizes}")
    groups = [{k: _restore_tuples(v, cur.get(k)) for k, v in g.items()} for g, cur in zip(groups, current)]
    params = {i: p for g_saved, g in zip(groups, current) for i, p in zip(g_saved["params"], g["params"])}
    state: dict[int, dict[str, Any]] = {}
    for key, value in file.section(f"optim/{name}/").items():
        index, state_key = key.split("/", 1)
        if int(index) not in params:
            raise CheckpointError(f"optimizer {name!r}: state for unknown parameter index {index}")
        state.setdefault(int(index), {})[state_key] = value
    for index, plain in meta[name]["state"].items():
        state.setdefault(int(index), {}).update(plain)
    return {"state": state, "param_groups": groups}


def _own_rng(file: _File) -> dict[str, Tensor]:
    rank, world_size = world()
    saved_world = int(file.metadata.get("world_size", "0"))
    if saved_world != world_size:
        raise CheckpointError(
            f"{file.path} was written by {saved_world} processes, this run has {world_size}: "
            "every rank's RNG state must be restored for an exact resume"
        )
    state = file.section(f"rng/{rank}/")
    needed = {"torch", "numpy", "python"}
    if not needed <= set(state):
        raise CheckpointError(f"{file.path}: RNG state of rank {rank} is incomplete (has {sorted(state)})")
    saved_cuda = sum(k.startswith("cuda/") for k in state)
    if saved_cuda and saved_cuda != (torch.cuda.device_count() if torch.cuda.is_available() else 0):
        raise CheckpointError(f"{file.path}: saved {saved_cuda} CUDA RNG states, this process sees a different number of devices")
    return state


def checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Step, config and history of a checkpoint, from its metadata only (no tensor is read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated: not a readable safetensors file ({exc})") from None
    _check_format(path, metadata)
    return _info(_File(path, metadata, {}))


def _info(file: _File) -> CheckpointInfo:
    try:
        step = int(file.metadata["step"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{file.path}: metadata entry 'step' is missing or not an integer") from None
    return CheckpointInfo(step=step, config=file.json("config"), history=file.json("history"))


def load_checkpoint(
    path: str | Path,
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> CheckpointInfo:
    """Restore the named modules and optimizers and this rank's RNG states from ``path``.

    Everything is checked before anything is modified, so a failed load leaves the objects as they
    were. Raises FileNotFoundError when there is no file and CheckpointError naming the problem
    (corrupt or foreign file, missing role or optimizer, mismatched key, shape or dtype).
    """
    file = _read(path)
    info = _info(file)
    states = {role: _match_module(file, role, module, exact_dtype=True) for role, module in modules.items()}
    optim_states = {name: _match_optimizer(file, name, opt) for name, opt in optimizers.items()}
    rng = _own_rng(file)
    for role, module in modules.items():
        module.load_state_dict(states[role])
    for name, optimizer in optimizers.items():
        try:
            optimizer.load_state_dict(optim_states[name])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"optimizer {name!r}: {exc}") from None
    set_rng_state(rng)
    return info


def load_weights(path: str | Path, modules: Mapping[str, nn.Module]) -> CheckpointInfo:
    """Load only weights: ``modules`` maps a role in the checkpoint to the module to fill.

    For a teacher in a distillation recipe (e.g. ``{"ema_0.9999": teacher}``). Optimizers and RNG
    are left alone; dtypes are converted to the module's (shapes must match).
    """
    file = _read(path)
    info = _info(file)
    states = {role: _match_module(file, role, module, exact_dtype=False) for role, module in modules.items()}
    for role, module in modules.items():
        module.load_state_dict(states[role])
    return info
