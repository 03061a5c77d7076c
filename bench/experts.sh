#!/usr/bin/env bash
# Expert streaming measurements: decode tok/s and hit rate at expert-cache
# sizes of 10/25/50/100% of the routed-expert bytes, with and without a hot
# table, O_DIRECT on and off, against the fully resident run (same logits
# hash = bitwise equal output).  Prints a markdown table.
#
#   bench/experts.sh [MODEL.gguf]     (default: builds /tmp/ds4-experts-q2.gguf,
#                                      ds4-mkmodel --preset small --recipe q2 --layers 6)
# Env: PREFILL (64), DECODE (64), THREADS (0 = all), DROP (1: drop the page cache
# before each run; needs root, skipped with a note when it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build/bench/experts ds4-hotexperts ds4-mkmodel >/dev/null
MODEL=${1:-/tmp/ds4-experts-q2.gguf}
PREFILL=${PREFILL:-64} DECODE=${DECODE:-64} THREADS=${THREADS:-0} DROP=${DROP:-1}
[ -f "$MODEL" ] || ./ds4-mkmodel --preset small --recipe q2 --layers 6 "$MODEL"
HOT=${MODEL%.gguf}.hot
# The table comes from other prompts (seed 99) than the measured run (seed 1).
[ -f "$HOT" ] || ./ds4-hotexperts -m "$MODEL" -o "$HOT" --random 512 --seed 99 --decode 64 -t "$THREADS"

drop() {
    [ "$DROP" = 1 ] || return 0
    sync
    if ! echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
        echo "note: cannot drop the page cache (not root?); buffered runs may hit it" >&2; DROP=0
    fi
}
run() { drop; ./build/bench/experts -m "$MODEL" --prefill "$PREFILL" --decode "$DECODE" -t "$THREADS" "$@"; }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

base=$(run)
EXP=$(field experts_mib "$base")
REF=$(field logits_fnv "$base")
echo "model $MODEL: routed experts ${EXP} MiB; prefill $PREFILL, decode $DECODE tokens (argmax); page cache dropped before each run: $([ "$DROP" = 1 ] && echo yes || echo no)"
echo
echo "| cache | MiB | hot table | I/O | decode tok/s | decode hit % | pinned hit % | MiB read/tok | I/O wait ms/tok | peak RSS MiB | logits = resident |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
echo "| resident (mmap) | - | - | - | $(field decode_tok_s "$base") | 100 | - | - | - | $(field peak_rss_mib "$base") | (reference) |"
for pct in 10 25 50 100; do
    mb=$(( (EXP * pct + 99) / 100 ))
    for hot in no yes; do
        for io in direct buffered; do
            args=(--expert-cache-mb "$mb")
            [ $hot = yes ] && args+=(--hot-experts "$HOT")
            [ $io = buffered ] && args+=(--expert-no-direct)
            r=$(run "${args[@]}")
            same=$([ "$(field logits_fnv "$r")" = "$REF" ] && echo yes || echo NO)
            echo "| ${pct}% | $mb | $hot | $io | $(field decode_tok_s "$r") | $(field hit_pct "$r") | $(field pinned_pct "$r") | $(field read_mib_tok "$r") | $(field io_wait_ms_tok "$r") | $(field peak_rss_mib "$r") | $same |"
        done
    done
done
