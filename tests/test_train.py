"""Trainer utilities: EMA against hand computation, checkpoint round trip / atomicity / corruption,
NaN handling, exact resume, outputs."""

from __future__ import annotations

import enum
import json
import os
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from flowcore import train
from flowcore.train import checkpoint as ckpt_module
from flowcore.train import files as files_module

CPU = train.Dist(rank=0, world_size=1, device=torch.device("cpu"))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is ~10-30x faster than two on this shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyNet(nn.Module):
    """A velocity MLP with a constant buffer, like a time embedding's frequencies."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.register_buffer("freq", torch.tensor([1.0, 3.0]))
        self.body = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Dropout(0.1), nn.Linear(width, 2))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([z, torch.sin(t[:, None] * self.freq)], 1))


def make(seed: int, decays=(0.9,)):
    train.seed_everything(seed)
    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, optimizer, train.EMA(model, decays)


def fm_loss(model: nn.Module) -> torch.Tensor:
    """Flow-matching loss on data drawn from all three global RNGs (torch, numpy, random)."""
    x = torch.randn(32, 2) * float(np.random.uniform(0.5, 1.5)) + random.random()
    eps, t = torch.randn(32, 2), torch.rand(32)
    z = (1 - t[:, None]) * x + t[:, None] * eps
    return ((model(z, t) - (eps - x)) ** 2).mean()


def run_steps(model, optimizer, ema, n):
    losses = []
    for _ in range(n):
        loss = fm_loss(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
        losses.append(loss.item())
    return losses


def next_random():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in module.state_dict().values()])


def save(path, model, optimizer, ema, step=3, config=None, history=None):
    train.save_checkpoint(path, modules={"model": model, **ema.modules()}, optimizers={"optimizer": optimizer},
                          step=step, config=config or {"lr": 1e-2}, history=history)


def load(path, model, optimizer, ema):
    return train.load_checkpoint(path, modules={"model": model, **ema.modules()}, optimizers={"optimizer": optimizer})


# ---------------------------------------------------------------- EMA
def test_ema_matches_hand_computation():
    w = nn.Parameter(torch.zeros((), dtype=torch.float64))
    model = nn.Module()
    model.w = w
    ema = train.EMA(model, (0.5, 0.9))
    for value in (1.0, 3.0, -2.0):
        with torch.no_grad():
            w.fill_(value)
        ema.update(model)
    # ema_k = d ema_{k-1} + (1 - d) theta_k from ema_0 = theta_0 = 0, by hand:
    # d = 0.5: 0.5, 1.75, -0.125;  d = 0.9: 0.1, 0.39, 0.151
    assert ema.averaged(0.5).w.item() == pytest.approx(-0.125, abs=1e-7)
    assert ema.averaged(0.9).w.item() == pytest.approx(0.151, abs=1e-7)
    assert list(ema.modules()) == ["ema_0.5", "ema_0.9"]
    for m in ema.modules().values():
        assert m.w.dtype == torch.float32 and not m.w.requires_grad and not m.training


def test_ema_copies_buffers_and_rejects_bad_decays():
    model, _, ema = make(0)
    model.freq.mul_(2)
    ema.update(model)
    assert torch.equal(ema.averaged(0.9).freq, model.freq)
    with pytest.raises(ValueError, match="decay"):
        train.EMA(model, (1.0,))
    with pytest.raises(ValueError, match="distinct"):
        train.EMA(model, (0.9, 0.9))
    with pytest.raises(KeyError, match="0.99"):
        ema.averaged(0.99)


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    path = tmp_path / "ck.safetensors"
    model, optimizer, ema = make(0)
    run_steps(model, optimizer, ema, 3)
    save(path, model, optimizer, ema, step=3, config={"lr": 1e-2, "betas": (0.9, 0.95)}, history={"loss": [3.0, 2.0, 1.0]})
    saved_model, saved_ema = flat(model), flat(ema.averaged(0.9))
    continued = run_steps(model, optimizer, ema, 2)
    draws = next_random()

    model2, optimizer2, ema2 = make(123)  # different weights, empty optimizer state, other RNG states
    np.random.seed(7), random.seed(7)
    assert not torch.equal(flat(model2), saved_model)
    info = load(path, model2, optimizer2, ema2)
    assert (info.step, info.config, info.history) == (3, {"lr": 1e-2, "betas": [0.9, 0.95]}, {"loss": [3.0, 2.0, 1.0]})
    assert torch.equal(flat(model2), saved_model) and torch.equal(flat(ema2.averaged(0.9)), saved_ema)
    assert optimizer2.param_groups[0]["betas"] == (0.9, 0.999)  # tuple again after JSON
    assert run_steps(model2, optimizer2, ema2, 2) == continued  # bitwise: Adam moments and step restored
    assert next_random() == draws
    assert torch.equal(flat(model2), flat(model)) and torch.equal(flat(ema2.averaged(0.9)), flat(ema.averaged(0.9)))


def test_load_weights_fills_a_teacher_without_touching_rng(tmp_path):
    path = tmp_path / "ck.safetensors"
    model, optimizer, ema = make(0)
    run_steps(model, optimizer, ema, 2)
    save(path, model, optimizer, ema)
    teacher = TinyNet().double()
    before = torch.get_rng_state()
    train.load_weights(path, {"ema_0.9": teacher})
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.allclose(flat(teacher), flat(ema.averaged(0.9)))


def test_crash_during_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "ck.safetensors"
    model, optimizer, ema = make(0)
    save(path, model, optimizer, ema, step=1)
    good = flat(model)
    run_steps(model, optimizer, ema, 1)

    def half_write(tensors, filename, metadata):  # dies after writing part of the new file
        Path(filename).write_bytes(b"\x00" * 100)
        raise KeyboardInterrupt("killed while writing")

    with monkeypatch.context() as m:
        m.setattr(ckpt_module, "save_file", half_write)
        with pytest.raises(KeyboardInterrupt):
            save(path, model, optimizer, ema, step=2)
    with monkeypatch.context() as m:  # dies after the complete temp file, before the rename
        m.setattr(files_module.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed before rename")))
        with pytest.raises(OSError, match="rename"):
            save(path, model, optimizer, ema, step=2)
    assert os.listdir(tmp_path) == ["ck.safetensors"]  # no temp files left behind
    fresh = make(5)
    assert load(path, *fresh).step == 1 and torch.equal(flat(fresh[0]), good)


def _data_offset(path: Path, key: str) -> int:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return 8 + n + json.loads(raw[8 : 8 + n])[key]["data_offsets"][0]


def test_corrupt_foreign_and_mismatched_checkpoints_raise_named_errors(tmp_path):
    path = tmp_path / "ck.safetensors"
    model, optimizer, ema = make(0)
    save(path, model, optimizer, ema)
    raw = path.read_bytes()

    def expect(data: bytes, match: str, target=None):
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(data)
        with pytest.raises(train.CheckpointError, match=match):
            load(bad, *(target or make(1)))

    expect(raw[: len(raw) // 2], "corrupt or truncated")
    expect(b"not a checkpoint at all", "corrupt or truncated")
    flipped = bytearray(raw)
    flipped[_data_offset(path, "module/model/body.0.weight") + 5] ^= 0xFF
    expect(bytes(flipped), "checksum mismatch in tensor 'module/model/body.0.weight'")

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(train.CheckpointError, match="not a flowcore checkpoint"):
        load(foreign, *make(1))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load(tmp_path / "missing.safetensors", *make(1))

    other, opt, _ = make(1)
    with pytest.raises(train.CheckpointError, match="no role 'ema_0.999'.*roles: model, ema_0.9"):
        train.load_checkpoint(path, modules={"ema_0.999": other}, optimizers={})
    with pytest.raises(train.CheckpointError, match="no optimizer 'critic'"):
        train.load_checkpoint(path, modules={}, optimizers={"critic": opt})
    wide = TinyNet(width=8)
    shapes = r"role 'model', key 'body.0.weight': checkpoint shape \(16, 4\), module shape \(8, 4\)"
    with pytest.raises(train.CheckpointError, match=shapes):
        train.load_checkpoint(path, modules={"model": wide}, optimizers={})
    before = flat(other)
    with pytest.raises(train.CheckpointError, match="dtype"):
        train.load_checkpoint(path, modules={"ema_0.9": other, "model": TinyNet().double()}, optimizers={})
    assert torch.equal(flat(other), before)  # a failed load modifies nothing


# ---------------------------------------------------------------- training driver
def driver(tmp_path: Path, steps: int, *, resume=False, nan_at=None, config=None, seed=0):
    """A full run with Adam, an EMA, a clipped gradient, a warm-up schedule and random data."""
    model, optimizer, ema = make(seed)

    def loss_fn(step):
        loss = fm_loss(model)
        if step == nan_at:
            loss = loss * float("nan")
        return loss, {"loss": loss.item(), "data_draw": random.random()}

    history = train.train_loop(loss_fn=loss_fn, model=model, optimizer=optimizer, steps=steps, out=tmp_path,
                               config=config or {"lr": 1e-2, "steps": steps}, dist=CPU, ema=ema, resume=resume,
                               ckpt_every=5, grad_clip=1.0, lr_schedule=lambda s: min(1.0, (s + 1) / 8))
    return history, model, ema


def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path):
    straight, model_a, ema_a = driver(tmp_path / "a", 20)
    driver(tmp_path / "b", 10)
    torch.manual_seed(999), np.random.seed(999), random.seed(999)  # whatever happens between the runs
    resumed, model_b, ema_b = driver(tmp_path / "b", 20, resume=True, seed=42)
    assert len(straight["loss"]) == 20
    assert resumed == straight  # every loss, log, lr and grad norm, bitwise
    assert torch.equal(flat(model_a), flat(model_b))
    assert torch.equal(flat(ema_a.averaged(0.9)), flat(ema_b.averaged(0.9)))
    assert straight["lr"][:3] == pytest.approx([1e-2 / 8, 2e-2 / 8, 3e-2 / 8])


def test_resume_refuses_missing_checkpoint_and_changed_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="resume=True but there is no checkpoint"):
        driver(tmp_path, 5, resume=True)
    driver(tmp_path, 5, config={"lr": 1e-2, "width": 16, "steps": 5})
    with pytest.raises(ValueError, match=r"config differs in lr: 0.01 -> 0.02; width: 16 -> '<absent>'"):
        driver(tmp_path, 10, resume=True, config={"lr": 2e-2, "steps": 10})
    history, _, _ = driver(tmp_path, 8, resume=True, config={"lr": 1e-2, "width": 16, "steps": 8})
    assert len(history["loss"]) == 8


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    message = r"non-finite loss nan at step 7; last good checkpoint: .*checkpoint.safetensors \(step 5\)"
    with pytest.raises(train.NonFiniteLossError, match=message):
        driver(tmp_path, 20, nan_at=7)
    assert load(tmp_path / train.CHECKPOINT_NAME, *make(3)).step == 5


def test_nan_gradient_with_finite_loss_is_caught_by_clipping(tmp_path):
    w = nn.Parameter(torch.zeros(()))
    model = nn.Module()
    model.w = w
    with pytest.raises(train.NonFiniteLossError, match="non-finite gradient norm nan at step 0; no checkpoint written yet"):
        train.train_loop(loss_fn=lambda s: (torch.sqrt(w.abs()), {}), model=model, optimizer=torch.optim.SGD([w], lr=0.1),
                         steps=2, out=tmp_path, config={}, dist=CPU, grad_clip=1.0)  # d sqrt|w| at 0 = inf * 0


def test_train_loop_rejects_a_loss_without_gradient(tmp_path):
    model, optimizer, _ = make(0)
    with pytest.raises(ValueError, match="step 0 does not require grad"):
        train.train_loop(loss_fn=lambda s: (torch.tensor(1.0), {}), model=model, optimizer=optimizer, steps=2,
                         out=tmp_path, config={}, dist=CPU)


# ---------------------------------------------------------------- distributed helpers, single process
def test_seed_everything_separates_ranks_and_repeats():
    draws = []
    for rank in (0, 1, 0):
        train.seed_everything(3, rank)
        draws.append(next_random())
    assert draws[0] == draws[2]
    assert all(a != b for a, b in zip(draws[0], draws[1]))


def test_init_distributed_outside_torchrun_and_bad_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    dist = train.init_distributed(device="cpu")
    assert dist == CPU and dist.is_main
    model = TinyNet()
    assert train.prepare_model(model, dist) is model
    monkeypatch.setenv("RANK", "one")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        train.init_distributed(device="cpu")
    with pytest.raises(ValueError, match="rank must be in"):
        train.Dist(rank=2, world_size=2, device=torch.device("cpu"))


# ---------------------------------------------------------------- outputs
def test_image_grid_values_layout_and_png(tmp_path):
    images = torch.tensor([[[[-1.0, 1.0], [0.0, 2.0]]], [[[1.0, 1.0], [1.0, -1.0]]]])  # (2, 1, 2, 2)
    grid = train.image_grid(images, nrow=2, scale=2, pad=1)
    assert grid.shape == (1 + 4 + 1, 1 + 2 * (4 + 1))
    assert grid[0, 0] == 128  # padding
    assert (grid[1:3, 1:3] == 0).all() and (grid[1:3, 3:5] == 255).all()  # -1 -> 0, 1 -> 255, 2x2 blocks
    assert (grid[3:5, 1:3] == 128).all() and (grid[3:5, 3:5] == 255).all()  # 0 -> 128 (127.5 rounds), 2 clips
    assert (grid[1:5, 6:10] == np.array([[255] * 4] * 2 + [[255, 255, 0, 0]] * 2)).all()
    from PIL import Image

    train.save_image_grid(images, tmp_path / "g.png", nrow=2, scale=2)
    assert (np.asarray(Image.open(tmp_path / "g.png")) == train.image_grid(images, 2, 2)).all()
    with pytest.raises(ValueError, match="NaN"):
        train.image_grid(images * float("nan"), nrow=2)


def test_plots_tables_and_json(tmp_path):
    from PIL import Image

    from flowcore.train.outputs import moving_average

    assert moving_average([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    train.save_loss_curve({"loss": [4.0, 2.0, 1.0, float("nan"), 0.5], "mse": [1.0, -1.0, 0.0, 1.0, 2.0]}, tmp_path / "l.png")
    train.save_scatter(torch.randn(50, 2), tmp_path / "s.png", "toy", reference=torch.randn(80, 2))
    for name in ("l.png", "s.png"):
        assert Image.open(tmp_path / name).format == "PNG"
    table = train.format_table({"floor": {"fd": 0.2, "ok": True}, "1nfe": {"fd": 1.23456}})
    assert table.splitlines()[0].split() == ["fd", "ok"]
    assert table.splitlines()[2].split() == ["floor", "0.2", "True"] and table.splitlines()[3].split() == ["1nfe", "1.235", "-"]

    class Mode(enum.Enum):
        A = "a"

    train.write_json(tmp_path / "m.json", {"path": tmp_path, "mode": Mode.A, "pair": (1, 2), "x": torch.tensor(0.5)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"path": str(tmp_path), "mode": "a", "pair": [1, 2], "x": 0.5}
    with pytest.raises(TypeError, match=r"obj\['bad'\] is a object"):
        train.write_json(tmp_path / "m.json", {"bad": object()})


def test_grad_clip_scales_the_global_gradient_norm_to_the_bound(tmp_path):
    """One SGD step (lr 1) on L = 3 sum(w) with w in R^4: the gradient is 3 everywhere, norm 6. Clipped to 1.5 the
    step is -(1.5 / 6) * 3 = -0.75 per entry and the history records the norm before clipping; a bound above 6 changes nothing."""
    for bound, step in ((1.5, -0.75), (10.0, -3.0)):
        w = nn.Parameter(torch.zeros(4, dtype=torch.float64))
        model = nn.ParameterList([w])
        history = train.train_loop(loss_fn=lambda s: (3 * w.sum(), {}), model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                                   steps=1, out=tmp_path / str(bound), config={}, dist=CPU, grad_clip=bound)
        assert history["grad_norm"] == [pytest.approx(6.0)]
        torch.testing.assert_close(w.detach(), torch.full((4,), step, dtype=torch.float64))
