"""Without the compiled extension, flowcore.ops runs the blockwise PyTorch recurrence, says so once,
and still matches SDPA(MATH) under torch.func.jvp (tangent and gradients through it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import sys, warnings
sys.modules["flowcore._C"] = None  # make `import flowcore._C` fail as if the extension were not built
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import flowcore.ops as ops
    import flowcore.ops  # noqa: F811  (a second import must not warn again)
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
assert not ops.extension_available()
assert sum("blockwise PyTorch fallback" in str(w.message) for w in caught) == 1, [str(w.message) for w in caught]
g = torch.Generator().manual_seed(0)
shapes = [(2, 4, 40, 8), (2, 2, 600, 8), (2, 2, 600, 8)]
xs = [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in (*shapes, *shapes)]
def ref(q, k, v):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
out = []
for fn in (lambda q, k, v: ops.fused_attention(q, k, v, causal=True), ref):
    o, t = torch.func.jvp(fn, tuple(xs[:3]), tuple(xs[3:]))
    out.append((o, t, *torch.autograd.grad(o.sum() + t.square().sum(), xs)))
for a, r in zip(*out):
    torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)
print("fallback ok")
"""


def test_fallback_without_extension_warns_once_and_matches_math():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fallback ok" in result.stdout
