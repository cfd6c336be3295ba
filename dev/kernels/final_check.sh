#!/usr/bin/env bash
# dev/kernels/final_check.sh: the last device call of a session: the GPU
# test, compute-sanitizer on the quick test, `nanochat bench` on d34, the
# server load test and picochat end to end. Prebuilt binaries in .gpu-bin
# (see tools/gpu_check.sh).
set -u
OUT=${OUT:-/tmp/nc-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu-bin/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
B=$PWD/.gpu-bin
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 100 $B/test_cuda_backend >"$OUT/test.log" 2>&1
echo "test_cuda_backend: rc=$? $(tail -n 1 "$OUT/test.log")"
NC_CUDA_TEST_QUICK=1 timeout 120 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
    $B/test_cuda_backend >"$OUT/sanitizer.log" 2>&1
echo "compute-sanitizer: rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
timeout 90 $B/nanochat bench --random d34 --device cuda 2>&1 | grep -E "^(bandwidth|prefill|decode|batch)"
OUT="$OUT/serve" timeout 170 bash tools/gpu_serve_bench.sh 2>&1 | grep -E "throughput|inter-token|TTFT|decode ctx 512|engine_"
NC_BIN=$B/nanochat timeout 200 python3 tests/py/test_picochat_e2e.py 2>&1 | grep -vE "^  " | tail -5
