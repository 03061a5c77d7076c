#!/usr/bin/env bash
# First run on a fresh machine: install build deps, build, then chat with a
# small synthetic demo model (random weights + DeepSeek V4's real tokenizer).
# Extra arguments go to `ds4 --demo` (e.g. -p "Hello" for a one-shot run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -j"$(nproc)" programs
exec ./ds4 --demo "$@"
