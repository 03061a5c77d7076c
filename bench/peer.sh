#!/usr/bin/env bash
# DwarfStar vs llama.cpp (release v0.5.0, the `deepseek4` architecture) on the
# same GGUF: prefill and decode tokens/s of both engines and the ratio
# ours/peer, plus a teacher-forced logits comparison (top-1 agreement, max
# relative error over the peer's top-K logits at every position).
#
#   bench/peer.sh [-m MODEL.gguf] [-t THREADS] [-p PP] [-n TG] [-r RUNS]
#                 [-l LOGITS_TOKENS] [-k K] [--no-speed] [--no-logits] [--check]
#
# Without -m it makes the small model llama.cpp can run: the tiny preset
# (golden tiny-b shapes) with indexer head dim 64 instead of 32, F32.
# (llama.cpp v0.5.0 always applies a Hadamard rotation to the lightning-
# indexer keys whose size is the largest power of two >= 64 dividing the
# head dim, so an indexer key_length that is not a multiple of 64 — tiny-b's
# 32 — aborts in ggml_reshape_2d while building the graph.)
#
# The peer is installed from the npm registry (node-llama-cpp@3.22.1 +
# @node-llama-cpp/linux-x64@3.22.1: prebuilt libllama, llama.cpp source as a
# git bundle for the headers) into $DS4_PEER_DIR (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/ds4-peer) when it is not there yet; nothing
# of it enters the repository.  The C harness is shared/peer/peer_llama.c
# ($DS4_SHARED, default ../shared), built with one change made on a copy:
# PEER_KV_F32=1 selects an F32 KV cache, because llama.cpp's default F16 cache
# alone moves logits by ~3e-4 relative (used for the logits run; the speed
# runs keep llama.cpp's default KV type), and PEER_NO_MMAP=1 reads the weights
# at load time (speed runs): peer_llama has no warm-up, so with mmap its timed
# prefill would pay the page faults of the first touch, which ds4-bench's
# warm-up excludes on our side.
#
# Speed: ours is ds4-bench (one frontier at PP, --gen TG, warm-up), the peer
# is peer_llama -p PP -n TG (no warm-up inside one process); both use the
# same pseudo-random prompt (the LCG of peer_llama.c, seed 1), best of RUNS.
# Logits: the peer prints top-K raw logits at each of the first
# LOGITS_TOKENS positions (F32 KV, flash attention off); ours is
# `ds4 --dump-logits --numerics reference` on the same ids; bench/peercmp.c
# compares them.  Use an F32 model for it (the default): on F16/BF16 weights
# (the q8_0 and q2 recipes keep mHC, compressor, indexer and router weights
# in F16) the peer's dots evidently round the activations to the weight's
# type (ggml's vec_dot_type): tiny q8_0/f16/bf16 differ by 0.2-1% mean
# relative error, small-q2 by 3%, while F32 models, tiny or small-shaped,
# agree to ~3e-6, and ours matches the HF golden logits on bf16 (3.6e-6).
#
# --check (the CI hook, tests/test_peer.c): logits only, then exits 1 unless
# top-1 agrees at >= 99% of positions and >= 99% of positions are within
# 1e-4 relative error (isolated exact ties in the indexer's top-k may be
# broken differently by the two engines).
# Exit status 77: the peer cannot be installed here (no npm or no registry).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${DS4_BIN:-$ROOT}
SHARED=${DS4_SHARED:-$ROOT/../shared}
PEER_DIR=${DS4_PEER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ds4-peer}
NLC_VERSION=3.22.1

model="" threads=2 pp=512 tg=32 runs=3 ln=400 topk=8 do_speed=1 do_logits=1 check=0
while [ $# -gt 0 ]; do
    case "$1" in
        -m) model=$2; shift 2 ;;
        -t) threads=$2; shift 2 ;;
        -p) pp=$2; shift 2 ;;
        -n) tg=$2; shift 2 ;;
        -r) runs=$2; shift 2 ;;
        -l) ln=$2; shift 2 ;;
        -k) topk=$2; shift 2 ;;
        --no-speed) do_speed=0; shift ;;
        --no-logits) do_logits=0; shift ;;
        --check) check=1; do_speed=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "peer.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ds4peer.XXXXXX")
# DS4_PEER_KEEP=1 keeps the work files (ids, both logits dumps, peer output)
if [ -n "${DS4_PEER_KEEP:-}" ]; then echo "work dir: $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi

# ---- the peer: npm packages, headers, harness ----
LIB=$PEER_DIR/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
BUNDLE=$PEER_DIR/node_modules/node-llama-cpp/llama/gitRelease.bundle
if [ ! -f "$LIB/libllama.v0.5.0.so" ]; then
    if ! command -v npm >/dev/null; then
        echo "peer.sh: npm not found; cannot install the llama.cpp peer (skipped)" >&2
        exit 77
    fi
    echo "peer.sh: installing node-llama-cpp@$NLC_VERSION into $PEER_DIR" >&2
    mkdir -p "$PEER_DIR"
    if ! (cd "$PEER_DIR" && { [ -f package.json ] || npm init -y >/dev/null; } &&
          timeout 300 npm install --ignore-scripts --no-audit --no-fund --omit=optional \
              --fetch-retries 1 --fetch-timeout 60000 \
              "node-llama-cpp@$NLC_VERSION" "@node-llama-cpp/linux-x64@$NLC_VERSION" >"$WORK/npm.log" 2>&1); then
        echo "peer.sh: npm install failed (registry unreachable?); peer skipped:" >&2
        tail -5 "$WORK/npm.log" >&2
        exit 77
    fi
fi
HDR=$PEER_DIR/llama-headers
if [ ! -f "$HDR/include/llama.h" ]; then
    rm -rf "$HDR.tmp" && mkdir -p "$HDR.tmp"
    git init -q "$HDR.tmp/git"
    git -C "$HDR.tmp/git" fetch -q "$BUNDLE" HEAD
    git -C "$HDR.tmp/git" archive FETCH_HEAD include ggml/include | tar -x -C "$HDR.tmp"
    rm -rf "$HDR.tmp/git" "$HDR" && mv "$HDR.tmp" "$HDR"
fi
sed -e 's/cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;/&\n    if (getenv("PEER_KV_F32")) cp.type_k = cp.type_v = GGML_TYPE_F32;/' \
    -e 's/mp.n_gpu_layers = 0;/&\n    if (getenv("PEER_NO_MMAP")) mp.load_mode = LLAMA_LOAD_MODE_NONE;/' \
    "$SHARED/peer/peer_llama.c" >"$WORK/peer_llama.c"
[ "$(grep -c 'PEER_KV_F32\|PEER_NO_MMAP' "$WORK/peer_llama.c")" = 2 ] ||
    { echo "peer.sh: cannot patch peer_llama.c" >&2; exit 1; }
gcc -O2 -o "$WORK/peer_llama" "$WORK/peer_llama.c" -I"$HDR/include" -I"$HDR/ggml/include" \
    -L"$LIB" -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -l:libggml-base.so -Wl,-rpath,"$LIB"
gcc -O2 -std=c11 -D_GNU_SOURCE -o "$WORK/peercmp" "$ROOT/bench/peercmp.c" -lm
PEER=$WORK/peer_llama

# ---- the model ----
if [ -z "$model" ]; then
    model=$WORK/tiny-idx64-f32.gguf
    "$BIN/ds4-mkmodel" --preset tiny --idx-dim 64 --recipe f32 --seed 1 "$model" >/dev/null 2>"$WORK/mk.log" ||
        { cat "$WORK/mk.log" >&2; exit 1; }
fi
echo "peer: llama.cpp v0.5.0 (npm node-llama-cpp@$NLC_VERSION, $LIB)"
echo "model: $model  threads: $threads"

# ---- speed ----
if [ "$do_speed" = 1 ]; then
    best_ours_pp=0 best_ours_tg=0 best_peer_pp=0 best_peer_tg=0
    max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
    for ((i = 0; i < runs; i++)); do
        out=$("$BIN/ds4-bench" -m "$model" --ctx-start "$pp" --gen "$tg" -t "$threads")
        s=$(echo "$out" | grep '^summary')
        o_pp=$(echo "$s" | sed 's/.*prefill_tps=\([0-9.]*\).*/\1/')
        o_tg=$(echo "$s" | sed 's/.*gen_tps=\([0-9.]*\).*/\1/')
        out=$(PEER_NO_MMAP=1 "$PEER" "$model" -t "$threads" -c $((pp + tg + 16)) -p "$pp" -n $((tg + 1)) -k 0 2>"$WORK/peer.err") ||
            { cat "$WORK/peer.err" >&2; exit 1; }
        p_pp=$(echo "$out" | sed -n 's/^pp .*  \([0-9.]*\) tok\/s/\1/p')
        p_tg=$(echo "$out" | sed -n 's/^tg .*  \([0-9.]*\) tok\/s/\1/p')
        best_ours_pp=$(max "$best_ours_pp" "$o_pp"); best_ours_tg=$(max "$best_ours_tg" "$o_tg")
        best_peer_pp=$(max "$best_peer_pp" "$p_pp"); best_peer_tg=$(max "$best_peer_tg" "$p_tg")
    done
    echo "speed: prompt $pp tokens, generate $tg tokens, best of $runs"
    printf "  ours  prefill_tps=%.2f gen_tps=%.2f\n" "$best_ours_pp" "$best_ours_tg"
    printf "  peer  prefill_tps=%.2f gen_tps=%.2f\n" "$best_peer_pp" "$best_peer_tg"
    awk -v a="$best_ours_pp" -v b="$best_peer_pp" -v c="$best_ours_tg" -v d="$best_peer_tg" \
        'BEGIN { printf "  ratio ours/peer prefill=%.3f gen=%.3f\n", a / b, c / d }'
fi

# ---- logits ----
if [ "$do_logits" = 1 ]; then
    PEER_KV_F32=1 "$PEER" "$model" -t "$threads" -c $((ln + 64)) -p "$ln" -n 1 -k "$topk" -a \
        >"$WORK/peer.txt" 2>"$WORK/peer.err" || { cat "$WORK/peer.err" >&2; exit 1; }
    sed -n 's/^prompt_ids: //p' "$WORK/peer.txt" >"$WORK/ids.txt"
    "$BIN/ds4" -m "$model" --tokens-file "$WORK/ids.txt" --dump-logits "$WORK/ours.f32" \
        --numerics reference -t "$threads"
    n=$(tr ',' '\n' <"$WORK/ids.txt" | grep -c .)
    vocab=$(( $(stat -c %s "$WORK/ours.f32") / 4 / n ))
    res=$("$WORK/peercmp" "$WORK/ours.f32" "$vocab" "$WORK/peer.txt")
    echo "logits: $n positions, peer top-$topk, F32 KV, ours --numerics reference"
    echo "  $res"
    if [ "$check" = 1 ]; then
        echo "$res" | awk '{
            for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            split(v["top1"], t, "/")
            ok = ("over_tol" in v) && t[2] > 0 && t[1] >= 0.99 * t[2] && v["over_tol"] <= 0.01 * v["positions"]
            print ok ? "check: ok" : "check: FAILED"; exit !ok }'
    fi
fi
