#!/usr/bin/env bash
# The whole test suite: setup, build, tests, then the same tests under ASan/UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -j"$(nproc)" all
make test
# CUDA backend: compile-only check where nvcc is installed (no GPU needed)
if command -v nvcc >/dev/null; then make -j"$(nproc)" cuda-check; fi
make -j"$(nproc)" SANITIZE=1 all
make test SANITIZE=1
