#!/usr/bin/env bash
# CUDA backend checks and timings for the GPU machine (H100/H200), in phases
# that each fit one 10-minute device command:
#
#   scripts/cuda_device_test.sh build     make all + make cuda (CUDA_ARCH=90)
#   scripts/cuda_device_test.sh bw        HBM / PCIe bandwidth (ds4-cuda-bw)
#   scripts/cuda_device_test.sh mma       Q8_0 tensor-core prefill: the gate and
#                                         its self-test (vs CPU reference: bitwise
#                                         expected; vs dp4a), GF/s of both paths on
#                                         4096 x 4096 x {64,512,2048} (ds4-cuda-mma);
#                                         DS4_CUDA_MMA=0 turns the gate off; q8_0
#                                         synthetic CUDA-vs-CPU logits with the
#                                         path on and off
#   scripts/cuda_device_test.sh golden    tiny-b / tiny-d (f32, bf16 recipes) on
#                                         --backend cuda vs shared/golden: full
#                                         prefill, chunked prefill (134), decode
#                                         from 200; tolerance 1e-3 (CPU control too)
#   scripts/cuda_device_test.sh parity    CUDA vs CPU logits on a synthetic q2
#                                         model (small preset): resident experts,
#                                         a tiny VRAM expert cache, graph off
#   scripts/cuda_device_test.sh flash     decode / prefill tok/s, synthetic Flash
#                                         q2: experts VRAM+host cache, and a
#                                         24-layer cut with every expert in VRAM
#   scripts/cuda_device_test.sh all       every phase (needs > 10 minutes)
#
# Results go to $OUT (default ./cuda-out): logs per phase and summary.txt,
# whose last lines are printed at the end.  Exit status 1 if a check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/cuda-out}
mkdir -p "$OUT"
GOLDEN=${GOLDEN:-../shared/golden}
[ -d "$GOLDEN" ] || GOLDEN=shared/golden
export PATH=$PATH:/usr/local/cuda/bin
J=$(nproc)
SUM=$OUT/summary.txt
FAIL=0
note() { echo "$*" | tee -a "$SUM"; }
run() { # name, command...: logs to $OUT/name.log, records PASS/FAIL
    local name=$1; shift
    if "$@" > "$OUT/$name.log" 2>&1; then note "PASS $name"; else note "FAIL $name (see $name.log)"; FAIL=1; fi
    tail -3 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUM"
}

phase_build() {
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
    run build_cpu make -j"$J" all
    run build_cuda make -j"$J" cuda CUDA_ARCH="${CUDA_ARCH:-90}"
    run resources bash -c "for f in src/cuda/*.cu; do nvcc -O2 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Isrc -DDS4_CUDA -Xptxas -v -c \$f -o /dev/null; done 2>&1 | grep -E 'Compiling|registers|spill' "
}

phase_bw() { run bandwidth build-cuda/bin/ds4-cuda-bw; }

phase_mma() {
    run mma build-cuda/bin/ds4-cuda-mma
    grep -h "gate\|self-test\|GF/s" "$OUT/mma.log" | sed 's/^/    /' >> "$SUM"
    run mma-gate-off bash -c "DS4_CUDA_MMA=0 build-cuda/bin/ds4-cuda-mma 512 4096 64 | tee /dev/stderr | grep -q 'gate (DS4_CUDA_MMA=0): OFF'"
    local sb=build-cuda/bin/ds4-synthbench
    local q8="--preset small --layers 6 --recipe q8_0 --ctx 2048 --prefill 700 --decode 8 --compare cpu --backend cuda"
    run mma-parity-q8-on $sb $q8
    run mma-parity-q8-off env DS4_CUDA_MMA=0 $sb $q8
    grep -h "compare vs\|tok/s" "$OUT"/mma-parity-*.log | sed 's/^/    /' >> "$SUM"
}

phase_golden() {
    local ids
    for model in tiny-b tiny-d; do
        [ -d "$GOLDEN/$model" ] || { note "SKIP golden $model (no $GOLDEN/$model)"; continue; }
        ids=$OUT/$model.ids
        python3 - "$GOLDEN/$model/golden.safetensors" > "$ids" <<'PY'
import json, struct, sys, array
f = open(sys.argv[1], 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
b, e = h['input_ids']['data_offsets']; f.seek(8 + n + b); a = array.array('i'); a.frombytes(f.read(e - b))
print(','.join(map(str, a)))
PY
        local ntok half
        ntok=$(tr ',' '\n' < "$ids" | wc -l)
        half=$((ntok / 2))
        for recipe in f32 bf16; do
            local g=$OUT/$model-$recipe.gguf
            [ -f "$g" ] || ./ds4-convert --recipe $recipe "$GOLDEN/$model" "$g" > "$OUT/convert-$model-$recipe.log" 2>&1
            local tag=$model-$recipe-cuda be=cuda
            run "golden-$tag-full" bash -c "build-cuda/bin/ds4 -m $g --backend $be --numerics reference --tokens-file $ids --dump-logits $OUT/$tag-full.f32 && python3 scripts/cuda_logits_cmp.py $OUT/$tag-full.f32 $GOLDEN/$model/golden.safetensors:logits"
            run "golden-$tag-chunk" bash -c "build-cuda/bin/ds4 -m $g --backend $be --numerics reference --tokens-file $ids --chunk 134 --dump-logits $OUT/$tag-chunk.f32 && python3 scripts/cuda_logits_cmp.py $OUT/$tag-chunk.f32 $GOLDEN/$model/golden.safetensors:logits"
            run "golden-$tag-decode" bash -c "build-cuda/bin/ds4 -m $g --backend $be --numerics reference --tokens-file $ids --decode-from $half --dump-logits $OUT/$tag-dec.f32 && python3 scripts/cuda_logits_cmp.py $OUT/$tag-dec.f32 $GOLDEN/$model/golden.safetensors:logits"
            # control: the CPU backend of the same binary
            tag=$model-$recipe-cpu
            run "golden-$tag-full" bash -c "build-cuda/bin/ds4 -m $g --backend cpu --numerics reference --tokens-file $ids --dump-logits $OUT/$tag-full.f32 && python3 scripts/cuda_logits_cmp.py $OUT/$tag-full.f32 $GOLDEN/$model/golden.safetensors:logits"
            # model numerics (FP8/FP4 QAT): CUDA vs CPU, same binary
            run "qat-$model-$recipe" bash -c "build-cuda/bin/ds4 -m $g --backend cuda --tokens-file $ids --dump-logits $OUT/q-cuda.f32 && build-cuda/bin/ds4 -m $g --backend cpu --tokens-file $ids --dump-logits $OUT/q-cpu.f32 && python3 scripts/cuda_logits_cmp.py $OUT/q-cuda.f32 $OUT/q-cpu.f32 --vocab 2048 --tol 1e-2"
        done
    done
}

phase_parity() {
    local sb=build-cuda/bin/ds4-synthbench
    local common="--preset small --layers 6 --recipe q2 --ctx 2048 --prefill 700 --decode 24 --compare cpu"
    run parity-resident $sb $common --backend cuda
    run parity-cache $sb $common --backend cuda --gpu-expert-cache-mb 96
    run parity-nograph env DS4_CUDA_NO_GRAPH=1 $sb $common --backend cuda
    run parity-q8 $sb --preset small --layers 6 --recipe q8_0 --ctx 2048 --prefill 700 --decode 24 --compare cpu --backend cuda
    run parity-q4 $sb --preset small --layers 6 --recipe q4 --ctx 2048 --prefill 300 --decode 8 --compare cpu --backend cuda
    grep -h "compare vs" "$OUT"/parity-*.log | sed 's/^/    /' >> "$SUM"
}

phase_flash() {
    local sb=build-cuda/bin/ds4-synthbench
    # every expert in VRAM: 24 of 43 layers (~45 GB at q2)
    run flash24-resident $sb --preset flash --layers 24 --recipe q2 --ctx 4096 --prefill 512 --decode 64 --backend cuda
    # full depth: VRAM cache of ~60 GB, the rest copied from pinned host memory
    run flash43-cache $sb --preset flash --recipe q2 --ctx 4096 --prefill 512 --decode 64 --backend cuda \
        --gpu-expert-cache-mb ${FLASH_CACHE_MB:-60000}
    grep -h "tok/s\|image" "$OUT"/flash*.log | sed 's/^/    /' >> "$SUM"
}

case "${1:-all}" in
build) phase_build ;;
bw) phase_bw ;;
mma) phase_mma ;;
golden) phase_golden ;;
parity) phase_parity ;;
flash) phase_flash ;;
all) phase_build; phase_bw; phase_mma; phase_golden; phase_parity; phase_flash ;;
*) echo "usage: $0 build|bw|mma|golden|parity|flash|all" >&2; exit 2 ;;
esac
echo "---- summary ($OUT/summary.txt) ----"
tail -40 "$SUM"
exit $FAIL
