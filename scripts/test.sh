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
# NEON level (aarch64 cross build under qemu-user) on x86 hosts; 77: the
# cross tools cannot be installed here, which skips it with a note.
rc=0; bash scripts/neon_check.sh || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 77 ] || exit "$rc"
make -j"$(nproc)" SANITIZE=1 all
make test SANITIZE=1
