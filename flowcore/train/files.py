"""Atomic file writes and JSON conversion shared by checkpoints and run outputs."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flowcore.train.distributed import is_main_process


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``path`` so that readers see the old file or the complete new one, never a partial one.

    ``write(tmp)`` fills a temporary file in the same directory; it is fsynced and renamed over
    ``path`` with ``os.replace`` (atomic on POSIX), then the directory is fsynced. On any failure
    the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def to_jsonable(obj: Any, where: str = "value") -> Any:
    """``obj`` as plain JSON types: mappings (str keys), lists, str, int, float, bool, None.

    Tuples become lists, paths strings, enums their value, dataclasses dicts, 0-d tensors and numpy
    scalars numbers. Anything else raises TypeError naming where it sits (``where``).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), where)
    if isinstance(obj, Mapping):
        return {_json_key(k, where): to_jsonable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # torch / numpy scalar
        return to_jsonable(obj.item(), where)
    raise TypeError(f"{where} is a {type(obj).__name__}, which has no JSON form")


def _json_key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (int, enum.Enum)) and not isinstance(key, bool):
        return str(key.value if isinstance(key, enum.Enum) else key)
    raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}; JSON keys are strings")


def dumps(obj: Any, where: str = "value", indent: int | None = None) -> str:
    """JSON text of ``obj`` (via :func:`to_jsonable`); non-finite floats are written as NaN/Infinity."""
    return json.dumps(to_jsonable(obj, where), indent=indent)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically, on rank 0 only."""
    if not is_main_process():
        return
    text = dumps(obj, "obj", indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
