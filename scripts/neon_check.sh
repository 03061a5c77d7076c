#!/usr/bin/env bash
# The NEON level on an x86 machine: cross-compiles the kernel tests
# (test_simd, test_vec, test_quant: every SIMD kernel against the scalar
# reference, the dispatch table, the vector helpers) for aarch64 and runs
# them under qemu-user, twice: with the dot-product extension (SDOT path)
# and for plain ARMv8.0 (widening-multiply path).  So the NEON kernels are
# compiled and checked like the x86 levels although no ARM machine is here.
#
#   bash scripts/neon_check.sh        # exit 0: all passed; 77: tools unavailable
#
# Installs gcc-aarch64-linux-gnu and qemu-user from Debian when missing (not
# part of setup.sh: the demo does not need them).  On an aarch64 host the
# normal test suite already runs the NEON level natively: nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" = aarch64 ]; then
    echo "neon-check: native aarch64 host, the suite runs the NEON level itself"
    exit 0
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null; } 2>/dev/null; then
        echo "neon-check: cannot install gcc-aarch64-linux-gnu / qemu-user: skipped"
        exit 77
    fi
fi

OUT=build-neon
mkdir -p "$OUT"
# What the kernel tests link: the quant module, the matmul driver and pool
# (test_simd's ds4_mm cases), the error helper, the pool's huge-page buffers.
SRCS="src/quant/*.c src/engine/ops.c src/engine/pool.c src/util/err.c src/util/mem.c"
CFLAGS="-O2 -std=c11 -ffp-contract=off -Wall -Wextra -D_GNU_SOURCE -Isrc -Itests -static -pthread"
fail=0
for march in armv8.2-a+dotprod armv8-a; do
    for t in test_simd test_vec test_quant; do
        bin="$OUT/$t-${march/+/-}"
        # shellcheck disable=SC2086
        aarch64-linux-gnu-gcc $CFLAGS -march="$march" -o "$bin" "tests/$t.c" $SRCS -lm
        if qemu-aarch64 "$bin" >"$bin.log" 2>&1; then
            echo "PASS neon $march $t: $(tail -n 1 "$bin.log")"
        else
            echo "FAIL neon $march $t:"
            grep -E "FAIL|failed" "$bin.log" | head -20
            fail=1
        fi
    done
done
exit $fail
