"""Train the digits classifier that flowcore's metrics use, reproducibly, and save it as safetensors.

    python scripts/train_digits_classifier.py            # writes flowcore/assets/digits_classifier.safetensors

CPU, one thread, deterministic algorithms, fixed seed: the same torch build gives the same bytes.
Data: the fixed stratified 80/20 split ``flowcore.data.digits_train_heldout()``; only the 80 % is
trained on. Augmentation (the classifier judges generated samples, so it should tolerate small
defects): each training image gets a random shift of at most one pixel (zero-padded with -1, the
background) with probability 1/2, and Gaussian pixel noise of std ~ U[0, 0.3]. AdamW with a cosine
learning-rate decay, label smoothing 0.05. Prints the held-out accuracy and stores it in the metadata
with the seed, the data hash and the hash of the held-out indices.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train with this checkout's flowcore
from flowcore import data  # noqa: E402
from flowcore.metrics import CLASSIFIER_FORMAT, CLASSIFIER_KIND, DigitsClassifier  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "flowcore" / "assets" / "digits_classifier.safetensors"


def heldout_indices_sha256() -> str:
    """Hash of the held-out indices, so a changed split is detected when the weights are loaded."""
    _, labels = data.load_digits()
    heldout, _ = data.stratified_split(labels, data.DIGITS_HELDOUT_FRACTION, data.DIGITS_HELDOUT_SEED)
    return hashlib.sha256(heldout.numpy().tobytes()).hexdigest()


def augment(x: Tensor, g: torch.Generator, max_noise: float) -> Tensor:
    """Random shift by (dy, dx) in {-1, 0, 1}^2 for half of the batch, then noise of std ~ U[0, max_noise]."""
    b = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    offset = torch.randint(0, 3, (b, 2), generator=g)  # top-left corner of the 8x8 window in the 10x10 padded image
    offset = torch.where(torch.rand(b, 1, generator=g) < 0.5, offset, torch.ones_like(offset))  # 1 = no shift
    rows = (offset[:, 0, None] + torch.arange(8))[:, :, None].expand(b, 8, 8)
    cols = (offset[:, 1, None] + torch.arange(8))[:, None, :].expand(b, 8, 8)
    shifted = padded[torch.arange(b)[:, None, None], 0, rows, cols][:, None]
    std = max_noise * torch.rand(b, 1, 1, 1, generator=g)
    return shifted + std * torch.randn(shifted.shape, generator=g)


def accuracy(model: DigitsClassifier, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def train(seed: int, epochs: int, batch_size: int, lr: float, max_noise: float) -> tuple[DigitsClassifier, float]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    (x_train, y_train), (x_held, y_held) = data.digits_train_heldout()
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y_train), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(augment(x_train[idx], g, max_noise)), y_train[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 10 == 0:
            model.eval()
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  held-out accuracy {accuracy(model, x_held, y_held):.4f}")
    model.eval()
    return model, accuracy(model, x_held, y_held)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-noise", type=float, default=0.3)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    model, held_acc = train(args.seed, args.epochs, args.batch_size, args.lr, args.max_noise)
    metadata = {
        "flowcore_kind": CLASSIFIER_KIND,
        "format": CLASSIFIER_FORMAT,
        "seed": str(args.seed),
        "epochs": str(args.epochs),
        "batch_size": str(args.batch_size),
        "lr": str(args.lr),
        "max_noise": str(args.max_noise),
        "heldout_accuracy": f"{held_acc:.6f}",
        "data_sha256": data.digits_sha256(),
        "heldout_indices_sha256": heldout_indices_sha256(),
        "torch_version": torch.__version__,
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(state, str(args.out), metadata=metadata)
    print(f"held-out accuracy {held_acc:.4f} ({time.perf_counter() - start:.1f} s); wrote {args.out}")


if __name__ == "__main__":
    main()
