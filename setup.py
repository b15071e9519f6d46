"""Builds flowcore with its C++ extension ``flowcore._C`` (the fused JVP-attention kernels).

CPU kernels are always built; the CUDA kernel is added when the installed torch has CUDA (or when
FLOWCORE_FORCE_CUDA=1 and nvcc is found). Build with ``pip install --no-build-isolation .`` so the
extension compiles against the torch already installed. Set FLOWCORE_NO_EXTENSION=1 to skip the
extension entirely (flowcore then uses its blockwise PyTorch fallback).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
CSRC = "csrc"


def _cxx_flags() -> list[str]:
    flags = ["-O3", "-fopenmp", "-Wno-unknown-pragmas"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        # at::vec uses AVX2 lanes (and torch's Sleef exp) when these are defined.
        flags += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return flags


def _extensions() -> tuple[list, dict]:
    if os.environ.get("FLOWCORE_NO_EXTENSION") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = [f"{CSRC}/jvp_attention_ops.cpp", f"{CSRC}/jvp_attention_cpu.cpp"]
    with_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    with_cuda = with_cuda or (os.environ.get("FLOWCORE_FORCE_CUDA") == "1" and CUDA_HOME is not None)
    extra = {"cxx": _cxx_flags()}
    if with_cuda:
        extra["cxx"].append("-DFLOWCORE_WITH_CUDA")
        extra["nvcc"] = ["-O3", "-DFLOWCORE_WITH_CUDA"]
        ext = CUDAExtension("flowcore._C", sources + [f"{CSRC}/jvp_attention_cuda.cu"],
                            include_dirs=[str(ROOT / CSRC)], extra_compile_args=extra, extra_link_args=["-fopenmp"])
    else:
        ext = CppExtension("flowcore._C", sources, include_dirs=[str(ROOT / CSRC)], extra_compile_args=extra,
                           extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
