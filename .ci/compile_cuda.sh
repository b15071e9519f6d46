#!/usr/bin/env bash
# Compiles flowcore's CUDA sources with nvcc, compile only (no GPU needed, nothing is linked or run),
# against the headers of the installed torch, so that the CUDA kernel cannot rot.
# Usage: .ci/compile_cuda.sh [nvcc]   (default: nvcc on PATH, else $CUDA_HOME/bin/nvcc)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${1:-$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")}"
PYTHON="${PYTHON:-python}"
TORCH_INC="$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
PY_INC="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
ARCHS="${FLOWCORE_CUDA_ARCHS:-80}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
# A CPU-only torch ships c10/cuda headers without the CMake-generated cuda_cmake_macros.h; provide the
# one line it holds for a shared-library build (compile-only shim, used only when torch lacks the file).
SHIM=()
if [ ! -f "$TORCH_INC/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  mkdir -p "$OUT/shim/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$OUT/shim/c10/cuda/impl/cuda_cmake_macros.h"
  SHIM=(-I"$OUT/shim")
fi
GENCODE=()
for a in $ARCHS; do GENCODE+=("-gencode=arch=compute_${a},code=sm_${a}"); done
echo "nvcc: $("$NVCC" --version | tail -1)"
for src in "$ROOT"/csrc/*.cu; do
  echo "compiling $(basename "$src") for sm ${ARCHS}"
  "$NVCC" -c "$src" -o "$OUT/$(basename "$src").o" -std=c++20 -O3 --expt-relaxed-constexpr \
    "${GENCODE[@]}" -Xcompiler -fPIC -Werror=all-warnings \
    -DTORCH_EXTENSION_NAME=_C -DFLOWCORE_WITH_CUDA \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
    -I"$ROOT/csrc" "${SHIM[@]}" -I"$TORCH_INC" -I"$TORCH_INC/torch/csrc/api/include" -I"$PY_INC"
done
echo "CUDA sources compile."
