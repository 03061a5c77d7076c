#!/usr/bin/env bash
# The whole test suite: setup, build, tests, then the same tests under ASan/UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -j"$(nproc)" all
make test
# CUDA backend: compile-only check where nvcc is installed (no GPU needed),
# on the PATH or in the toolkit's default place, so the sources never rot.
nvcc_bin=$(command -v nvcc || true)
[ -n "$nvcc_bin" ] || [ ! -x /usr/local/cuda/bin/nvcc ] || nvcc_bin=/usr/local/cuda/bin/nvcc
if [ -n "$nvcc_bin" ]; then
    make -j"$(nproc)" NVCC="$nvcc_bin" cuda-check
    echo "cuda-check: CUDA sources compile ($nvcc_bin)"
fi
make -j"$(nproc)" SANITIZE=1 all
make test SANITIZE=1
