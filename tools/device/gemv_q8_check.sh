#!/usr/bin/env bash
# tools/device/gemv_q8_check.sh: the 8-bit batch-1 GEMV (cuda_gemv.cu), the
# streaming kernel against the first one, in one device call, under BUDGET
# (default 240 s):
#   1. dev/kernels/gemm_q8 d34 gemv: the GEMV table (each shape and format:
#      "new", "old R=1|2|4" and bf16, every result checked against the CPU
#      reference) and the whole step's GEMVs in a CUDA graph;
#      HARNESS_ARGS="all gemv" adds d20, "d34" alone the GEMMs too;
#   2. `nanochat bench --random d34` batch-1 decode at 128 and 1024 context
#      with --weights int8 and fp8, each under NC_CUDA_GEMV_Q8=old and new;
#   3. test_cuda_backend (the 8-bit fixtures against PyTorch's quantised
#      references and the CPU backend, under the new default).
# Ends with the harness output, one bench table per format (old first: the
# ratio column is new / old) and the summary.
# The bundle: `make -j2 gpu-bundle GPU_TESTS=test_cuda_backend` (its bin/
# carries every dev/kernels harness, gemm_q8 among them).
#   usage: [BUDGET=240] [HARNESS_ARGS="d34 gemv"] bash tools/device/gemv_q8_check.sh
. "$(dirname "$0")/common.sh"
: "${HARNESS_ARGS=d34 gemv}"
MODEL="--random d34 --device cuda"
BENCH_ARGS="--prefill 0 --ctx 128,1024 --batch none"

step harness_gemm_q8 120 gemm_q8 $HARNESS_ARGS
for weights in int8 fp8; do
    for kernel in old new; do
        step "bench_${weights}_$kernel" 60 env NC_CUDA_GEMV_Q8=$kernel nanochat bench $MODEL --weights $weights \
            $BENCH_ARGS --json
    done
done
step test_cuda_backend 150 test_cuda_backend

echo "==== harness gemm_q8 $HARNESS_ARGS"
cat "$OUT/harness_gemm_q8.log" 2>/dev/null
for weights in int8 fp8; do
    echo "==== bench $MODEL --weights $weights $BENCH_ARGS: NC_CUDA_GEMV_Q8=old, then new"
    python3 tools/device/bench_table.py --run old "$OUT/bench_${weights}_old.log" \
        --run new "$OUT/bench_${weights}_new.log"
done
echo "==== test_cuda_backend"
grep -h "MISMATCH\|FAIL\|checks\|passed" "$OUT/test_cuda_backend.log" 2>/dev/null | tail -n 20
summary
