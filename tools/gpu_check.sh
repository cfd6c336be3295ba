#!/usr/bin/env bash
# tools/gpu_check.sh: everything one CUDA change needs, in one device call:
# build (sm_90a only, to save time), the GPU test, compute-sanitizer on the
# quick test, `nanochat bench` on d34 shapes and the PyTorch baselines.
# Logs go to $OUT (the device tool brings them back); a short table last.
#   usage: bash tools/gpu_check.sh [all|test|bench]   (default all)
set -u
OUT=${OUT:-/tmp/nc-gpu-out}
mkdir -p "$OUT"
what=${1:-all}
B=build-gpu
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$SECONDS
# -k: a teammate's half-written test elsewhere in the tree must not stop ours
make -k BUILD=$B -j16 CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a" $B/nanochat $B/tests/test_cuda_backend \
    >"$OUT/build.log" 2>&1
[ -x $B/nanochat ] && [ -x $B/tests/test_cuda_backend ] || { grep -m 30 -E "error" "$OUT/build.log"; exit 1; }
echo "build: $((SECONDS - t0)) s"
summary=()
if [ "$what" = all ] || [ "$what" = test ]; then
    t0=$SECONDS
    timeout 240 $B/tests/test_cuda_backend >"$OUT/test.log" 2>&1
    rc=$?
    summary+=("test_cuda_backend: rc=$rc ($((SECONDS - t0)) s): $(tail -n 1 "$OUT/test.log")")
    grep -E "worst|matched|FAIL" "$OUT/test.log" | head -40
    t0=$SECONDS
    NC_CUDA_TEST_QUICK=1 timeout 300 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
        $B/tests/test_cuda_backend >"$OUT/sanitizer.log" 2>&1
    rc=$?
    summary+=("compute-sanitizer memcheck: rc=$rc ($((SECONDS - t0)) s): $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)")
    grep -m 20 -E "Invalid|out of bounds|Error|FAIL" "$OUT/sanitizer.log"
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
    nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -o $B/gemv_harness dev/kernels/gemv.cu &&
        timeout 60 $B/gemv_harness >"$OUT/gemv.txt" 2>&1
    t0=$SECONDS
    timeout 240 $B/nanochat bench --random d34 --device cuda ${BENCH_ARGS:-} >"$OUT/bench.txt" 2>&1
    summary+=("bench: rc=$? ($((SECONDS - t0)) s)")
    NC_CUDA_PDL=1 timeout 120 $B/nanochat bench --random d34 --device cuda --prefill 0 --batch 8,128 \
        >"$OUT/bench_pdl.txt" 2>&1
    summary+=("bench PDL: rc=$?")
    t0=$SECONDS
    PYTHONUNBUFFERED=1 timeout 300 python3 tools/bench_pytorch.py ${PT_ARGS:-} >"$OUT/pytorch.txt" 2>&1
    summary+=("pytorch: rc=$? ($((SECONDS - t0)) s)")
    echo "==== dev/kernels/gemv"; cat "$OUT/gemv.txt"
    echo "==== nanochat bench"; cat "$OUT/bench.txt"
    echo "==== nanochat bench, NC_CUDA_PDL=1"; tail -n 4 "$OUT/bench_pdl.txt"
    echo "==== pytorch"; grep -v "^JSON" "$OUT/pytorch.txt" | tail -20
fi
echo "==== summary"
printf '%s\n' "${summary[@]}"
