#!/usr/bin/env bash
# dev/kernels/skinny_check.sh: one device call for the skinny (wgmma + TMA)
# GEMM: test_cuda_backend with it (default), without it (NC_CUDA_SKINNY=0,
# cuBLASLt for every product) and with PDL off, compute-sanitizer, then
# `nanochat bench` decode batches with and without it (two interleaved
# rounds, same card), then (SERVE=1) issue 5's server benchmark both ways.
# Binaries prebuilt here and carried in .gpu-bin (see tools/gpu_check.sh).
# Logs under $OUT, a short table last.
set -u
OUT=${OUT:-/tmp/nc-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu-bin/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
B=.gpu-bin
nvidia-smi --query-gpu=name --format=csv,noheader
for v in "NC_CUDA_SKINNY=1" "NC_CUDA_SKINNY=0" "NC_CUDA_PDL=0"; do
    env $v timeout 120 $B/test_cuda_backend >"$OUT/test_$v.log" 2>&1
    echo "test_cuda_backend $v: rc=$? $(tail -n 1 "$OUT/test_$v.log")"
done
NC_CUDA_TEST_QUICK=1 timeout 150 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
    $B/test_cuda_backend >"$OUT/sanitizer.log" 2>&1
echo "compute-sanitizer: rc=$? $(grep 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
for round in 1 2; do
    for v in 0 1; do
        printf 'round %d NC_CUDA_SKINNY=%d  ' "$round" "$v"
        NC_CUDA_SKINNY=$v timeout 90 $B/nanochat bench --random d34 --device cuda --prefill 0 --ctx none \
            --batch ${BATCHES:-2,4,8,16,32,48,64,96,128} 2>&1 | awk '/^batch/ {printf "%s=%s ", $2, $5} END {print ""}'
    done
done
if [ "${SERVE:-0}" = 1 ]; then
    for round in 1 2; do
        for v in 0 1; do
            NC_CUDA_SKINNY=$v OUT="$OUT/serve$v$round" bash tools/gpu_serve_bench.sh >"$OUT/serve.txt" 2>&1
            echo "server NC_CUDA_SKINNY=$v round $round: $(grep -m1 -E 'throughput' "$OUT/serve.txt")"
        done
    done
fi
