"""Pictures and tables of a run: sample grids, 2D scatter plots, the loss curve, a metrics table.

Every writer acts on rank 0 only and writes atomically. Pillow and matplotlib are imported when a
picture is made (the ``plots`` extra), so the rest of flowcore works without them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from flowcore.train.distributed import is_main_process
from flowcore.train.files import atomic_write


def image_grid(images: Tensor, nrow: int, scale: int = 4, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] tiled ``nrow`` per row, each upscaled ``scale`` times by
    nearest neighbour, separated by ``pad`` grey pixels: a uint8 array (H', W') or (H', W', 3).
    Values outside [-1, 1] are clipped; non-finite values raise ValueError."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be a tensor (N, C, H, W) with C = 1 or 3, got {getattr(images, 'shape', type(images))}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    if nrow < 1 or scale < 1 or pad < 0:
        raise ValueError(f"nrow and scale must be >= 1 and pad >= 0, got nrow={nrow}, scale={scale}, pad={pad}")
    x = images.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    n, c, h, w = x.shape
    rows = math.ceil(n / nrow)
    canvas = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 128, dtype=torch.uint8)
    for i in range(n):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        canvas[:, top : top + h, left : left + w] = x[i]
    return canvas[0].numpy() if c == 1 else canvas.permute(1, 2, 0).numpy()


def save_image_grid(images: Tensor, path: str | os.PathLike, nrow: int = 10, scale: int = 4) -> None:
    """Write :func:`image_grid` of ``images`` as a PNG (rank 0 only)."""
    grid = image_grid(images, nrow, scale)
    if not is_main_process():
        return
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))


def _save_figure(fig, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def save_scatter(points: Tensor, path: str | os.PathLike, title: str = "", reference: Tensor | None = None) -> None:
    """Scatter plot of (N, 2) points over optional (M, 2) reference points in grey (rank 0 only).

    Axis limits come from the reference when given (so a diverging sampler does not rescale the
    picture), else from the 0.5%..99.5% quantiles of the points."""
    for name, value in (("points", points), ("reference", reference)):
        if value is not None and (not isinstance(value, Tensor) or value.ndim != 2 or value.shape[1] != 2):
            raise ValueError(f"{name} must be a tensor of shape (N, 2), got {getattr(value, 'shape', type(value))}")
    if not is_main_process():
        return
    from matplotlib.figure import Figure

    p = points.detach().float().cpu().numpy()
    frame = reference.detach().float().cpu().numpy() if reference is not None else p[np.isfinite(p).all(1)]
    lo, hi = np.quantile(frame, 0.005, axis=0), np.quantile(frame, 0.995, axis=0)
    margin = 0.1 * (hi - lo).max() + 1e-6
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    if reference is not None:
        ax.scatter(frame[:, 0], frame[:, 1], s=2, c="0.75", linewidths=0, label="data")
    ax.scatter(p[:, 0], p[:, 1], s=2, c="tab:blue", alpha=0.6, linewidths=0, label="samples")
    ax.set_xlim(lo[0] - margin, hi[0] + margin)
    ax.set_ylim(lo[1] - margin, hi[1] + margin)
    ax.set_aspect("equal")
    ax.set_title(title)
    _save_figure(fig, path)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start): y_i = mean(v_{i-w+1..i})."""
    v = np.asarray(values, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def save_loss_curve(history: Mapping[str, Sequence[float]], path: str | os.PathLike) -> None:
    """One panel per history entry ("loss" first): raw values and a moving average over ~2% of the
    steps, log-scale y where all values are positive (rank 0 only)."""
    if not history or "loss" not in history:
        raise ValueError(f"history must contain 'loss', got keys {list(history)}")
    if not is_main_process():
        return
    from matplotlib.figure import Figure

    keys = ["loss"] + sorted(k for k in history if k != "loss")
    fig = Figure(figsize=(6, 2.2 * len(keys)))
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        y = np.asarray(history[key], dtype=np.float64)
        steps = np.arange(len(y))[np.isfinite(y)]
        y = y[np.isfinite(y)]
        if len(y):
            ax.plot(steps, y, lw=0.5, alpha=0.35, c="tab:blue")
            ax.plot(steps, moving_average(y, max(1, len(y) // 50)), lw=1.5, c="tab:blue")
            if (y > 0).all():
                ax.set_yscale("log")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    _save_figure(fig, path)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(metrics: Mapping) -> str:
    """Metrics as aligned text: a {row: {column: value}} mapping becomes a table with one line per
    row; a flat {name: value} mapping becomes two columns."""
    if all(isinstance(v, Mapping) for v in metrics.values()) and metrics:
        columns = list(dict.fromkeys(c for row in metrics.values() for c in row))
        header = ["", *columns]
        lines = [[str(name), *(_cell(row[c]) if c in row else "-" for c in columns)] for name, row in metrics.items()]
    else:
        header = ["metric", "value"]
        lines = [[str(k), _cell(v)] for k, v in metrics.items()]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(r) for r in lines)])


def print_table(metrics: Mapping) -> None:
    """Print :func:`format_table` of ``metrics`` (rank 0 only)."""
    if is_main_process():
        print(format_table(metrics), flush=True)
