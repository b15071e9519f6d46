"""`pip wheel --no-build-isolation .` produces a wheel with the compiled extension; installed into a
fresh virtual environment (torch from the system site-packages) the fused op loads and is correct.
Compiling the extension takes a few minutes on 2 shared cores, so this test is marked slow
(`pytest -m slow tests/test_wheel.py`)."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import sys
import torch
import flowcore, flowcore.ops as ops
assert flowcore.__file__.startswith(sys.prefix), (flowcore.__file__, sys.prefix)
assert ops.extension_available(), "the installed wheel did not load flowcore._C"
g = torch.Generator().manual_seed(0)
q, k, v, tq, tk, tv = (torch.randn(1, 2, 33, 16, generator=g, dtype=torch.float64) for _ in range(6))
out, tout = ops.attention_jvp(q, k, v, tq, tk, tv, causal=True)
with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
    ref = torch.func.jvp(lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(a, b, c, is_causal=True), (q, k, v), (tq, tk, tv))
torch.testing.assert_close(out, ref[0]); torch.testing.assert_close(tout, ref[1])
print("wheel ok", flowcore.__file__)
"""


@pytest.mark.slow
def test_wheel_builds_installs_and_runs(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", str(ROOT), "-w", str(dist)],
                   check=True, capture_output=True, text=True, timeout=1800)
    (wheel,) = dist.glob("flowcore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("flowcore/_C") and n.endswith(".so") for n in names), names
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, text=True, timeout=600)
    result = subprocess.run([str(python), "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wheel ok" in result.stdout
