#!/usr/bin/env bash
# Runs each test program given on the command line and prints one summary
# line, "N passed, N failed", that CI reads.  A program passes iff it exits 0.
set -u
pass=0; fail=0; failed=()
for t in "$@"; do
    name=$(basename "$t")
    start=$(date +%s)
    if out=$("$t" 2>&1); then
        pass=$((pass + 1)); status=PASS
    else
        fail=$((fail + 1)); status=FAIL; failed+=("$name")
    fi
    echo "$out" | grep -E 'FAIL|^  ' | head -40
    echo "$status $name ($(( $(date +%s) - start ))s) $(echo "$out" | tail -n 1)"
done
[ ${#failed[@]} -eq 0 ] || echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
