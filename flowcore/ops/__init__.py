"""Python side of flowcore's C++/CUDA extension: the fused JVP-attention operators.

``fused_attention`` (forward, ``torch.func.jvp``, ``forward_ad``, backward through the tangent,
``torch.compile``), ``attention_jvp`` (explicit tangents), ``extension_available``. Without the
compiled extension the same operators run a blockwise PyTorch version of the recurrence (warned once).
"""

import warnings

from flowcore.ops.attention import attention_jvp, extension_available, fused_attention

if not extension_available():
    warnings.warn(
        "flowcore: the compiled extension flowcore._C is not built; fused attention runs the blockwise "
        "PyTorch fallback (same recurrence and O(N) memory, slower). Build it with "
        "`pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )

__all__ = ["attention_jvp", "extension_available", "fused_attention"]
