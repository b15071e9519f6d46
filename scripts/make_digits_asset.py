"""Write flowcore/assets/digits.npz from scikit-learn's copy of the UCI 8x8 digits (run once; needs scikit-learn)."""
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

out = Path(__file__).resolve().parents[1] / "flowcore" / "assets" / "digits.npz"
d = load_digits()
np.savez_compressed(out, images=d.data.astype(np.uint8).reshape(-1, 8, 8), labels=d.target.astype(np.uint8))
print(f"wrote {out}")
