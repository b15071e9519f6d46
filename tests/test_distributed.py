"""Gradients really are averaged across ranks when the loss takes torch.func.jvp through the model.

The test runs this file as 2 processes with torchrun's environment (gloo, CPU). Each rank trains a
flow map with a MeanFlow loss (jvp of (z, t) with tangent (v, 1), target detached, loss through the
primal output) and a TVM-like variant (loss also through the tangent), on different data per rank.
Afterwards: parameters (and EMA) are bitwise identical on both ranks and equal, to fp32 tolerance,
to one process trained on the concatenated batch with mean reduction. The classic DDP pitfall
(calling ``ddp.module`` inside the jvp) is shown NOT to synchronise, so these checks can fail, and a
rank-dependent update is caught by ``train_loop``'s replica check.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from flowcore import train

STEPS, BATCH, LR, DECAY = 4, 16, 1e-2, 0.5
VARIANTS = ("primal", "tangent")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is ~10-30x faster than two on this shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FlowMapNet(nn.Module):
    """F(z, t, s) for 2D points, with a constant buffer (DDP's buffer broadcast would break jvp)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("freq", torch.tensor([1.0, 4.0]))
        self.body = nn.Sequential(nn.Linear(2 + 4, 32), nn.SiLU(), nn.Linear(32, 2))

    def forward(self, z, t, s):
        times = torch.cat([torch.sin(t[:, None] * self.freq), torch.cos(s[:, None] * self.freq)], 1)
        return self.body(torch.cat([z, times], 1))


def batch(step: int, rank: int):
    """Rank-specific data for this step, reproducible by the single-process reference."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(BATCH, 2, generator=g) * 0.5 + 1.0
    eps = torch.randn(BATCH, 2, generator=g)
    t = torch.rand(BATCH, generator=g)
    s = t * torch.rand(BATCH, generator=g)
    return x, eps, t, s


def jvp_loss(fn, x, eps, t, s, variant: str) -> torch.Tensor:
    """MeanFlow: u, du/dt = jvp(F(., ., s), (z, t), (v, 1)); mean |u - sg(v - (t - s) du/dt)|^2.
    The "tangent" variant adds 0.1 mean |du/dt|^2, so gradients also flow through the tangent."""
    z = (1 - t[:, None]) * x + t[:, None] * eps
    v = eps - x
    u, du_dt = torch.func.jvp(lambda z_, t_: fn(z_, t_, s), (z, t), (v, torch.ones_like(t)))
    loss = ((u - (v - (t - s)[:, None] * du_dt).detach()) ** 2).sum(1).mean()
    if variant == "tangent":
        loss = loss + 0.1 * (du_dt**2).sum(1).mean()
    return loss


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def worker(out: Path) -> None:
    """Runs on each rank (torchrun environment); writes rank<r>.safetensors with what the test checks."""
    dist = train.init_distributed(device="cpu")
    assert dist.world_size == 2, dist
    results, messages = {}, {}
    for variant in VARIANTS:
        train.seed_everything(0, dist.rank)  # a different init on each rank: prepare_model must sync it
        model = FlowMapNet()
        ema = train.EMA(model, (DECAY,)) if variant == "tangent" else None  # before prepare_model: train_loop syncs it
        net = train.prepare_model(model, dist)
        ema = ema or train.EMA(model, (DECAY,))
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)

        def loss_fn(step, variant=variant, net=net):
            return jvp_loss(net, *batch(step, dist.rank), variant), {}

        train.train_loop(loss_fn=loss_fn, model=model, optimizer=optimizer, steps=STEPS, out=out / variant,
                         config={"variant": variant}, dist=dist, ema=ema, ckpt_every=2)
        results[f"{variant}/model"] = flat(model)
        results[f"{variant}/ema"] = flat(ema.averaged(DECAY))

    # Each rank restores its own RNG state from the checkpoint rank 0 wrote (saved at the end above).
    results["rng/next"] = torch.rand(4)
    torch.manual_seed(1234)
    train.load_checkpoint(out / "tangent" / train.CHECKPOINT_NAME, modules={}, optimizers={})
    results["rng/restored"] = torch.rand(4)

    # The pitfall: a DDP wrapper, but the loss calls ddp.module inside the jvp (no all-reduce happens).
    train.seed_everything(0, 0)
    model = FlowMapNet()
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for step in range(STEPS):
        loss = jvp_loss(ddp.module, *batch(step, dist.rank), "primal")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    results["naive/model"] = flat(model)

    # A rank-dependent learning rate makes the replicas differ: the checkpoint-time check says so.
    model = train.prepare_model(FlowMapNet(), dist)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    try:
        train.train_loop(loss_fn=lambda step: (jvp_loss(model, *batch(step, dist.rank), "primal"), {}), model=model,
                         optimizer=optimizer, steps=STEPS, out=out / "diverged", config={}, dist=dist, ckpt_every=2,
                         lr_schedule=lambda step: 1.0 + dist.rank)
        messages["replica_error"] = ""
    except RuntimeError as exc:
        messages["replica_error"] = str(exc)

    # sync_gradients: mean over ranks; missing on one rank counts as zero; missing everywhere stays None.
    a, b, c = (nn.Parameter(torch.zeros(())) for _ in range(3))
    (3 * a + 5 * b if dist.rank == 0 else 7 * a).backward()
    train.sync_gradients([a, b, c])
    results["sync/grads"] = torch.stack([a.grad, b.grad])
    messages["sync/c_grad"] = str(c.grad)
    save_file({k: v.contiguous() for k, v in results.items()}, str(out / f"rank{dist.rank}.safetensors"), metadata=messages)
    train.close_distributed()


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def reference(variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One process, rank 0's initial weights, the two ranks' batches concatenated, mean reduction."""
    train.seed_everything(0, 0)
    model = FlowMapNet()
    ema = train.EMA(model, (DECAY,))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for step in range(STEPS):
        both = [torch.cat(parts) for parts in zip(batch(step, 0), batch(step, 1))]
        loss = jvp_loss(model, *both, variant)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
    return flat(model), flat(ema.averaged(DECAY))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The environment torchrun gives each worker (set directly: the launcher costs seconds)."""
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_jvp_losses_average_gradients_across_ranks(tmp_path):
    procs = [subprocess.Popen([sys.executable, __file__, str(tmp_path)], env=torchrun_env(rank, 2, port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank, port in zip(range(2), [free_port()] * 2)]
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    (r0, m0), (r1, _) = read(tmp_path / "rank0.safetensors"), read(tmp_path / "rank1.safetensors")

    for variant in VARIANTS:
        model_ref, ema_ref = reference(variant)
        assert torch.equal(r0[f"{variant}/model"], r1[f"{variant}/model"]), variant
        assert torch.equal(r0[f"{variant}/ema"], r1[f"{variant}/ema"]), variant
        torch.testing.assert_close(r0[f"{variant}/model"], model_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r0[f"{variant}/ema"], ema_ref, rtol=1e-5, atol=1e-6)
        train.seed_everything(0, 0)
        assert (model_ref - flat(FlowMapNet())).abs().max() > 1e-2  # training moved the weights

    assert torch.equal(r0["rng/next"], r0["rng/restored"]) and torch.equal(r1["rng/next"], r1["rng/restored"])
    assert not torch.equal(r0["rng/next"], r1["rng/next"])  # each rank got its own stream back

    # ddp.module inside the jvp: no all-reduce, the replicas drift apart.
    assert (r0["naive/model"] - r1["naive/model"]).abs().max() > 1e-3
    assert m0["replica_error"].startswith("parameters after step 1 differ across ranks"), m0["replica_error"]
    assert not (tmp_path / "diverged" / train.CHECKPOINT_NAME).exists()
    assert r0["sync/grads"].tolist() == r1["sync/grads"].tolist() == [5.0, 2.5]  # (3 + 7) / 2, (5 + 0) / 2
    assert m0["sync/c_grad"] == "None"


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
