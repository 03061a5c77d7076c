#!/usr/bin/env bash
# The whole test suite: setup, build, tests, then the same tests under ASan/UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -j"$(nproc)" all
make test
make -j"$(nproc)" SANITIZE=1 all
make test SANITIZE=1
