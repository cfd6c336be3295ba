#!/usr/bin/env bash
# tools/device/switches_check.sh: one device call for the switches that are
# written but not yet measured on a GPU, under BUDGET (default 330 s) after
# spec_check.sh's SPEC_BUDGET (default 130 s):
#   0. tools/device/spec_check.sh: NC_CUDA_VERIFY_ROWS=1 (verified chunks as
#      decode rows) against the fixtures and the golden conversations, under
#      compute-sanitizer, and its verify cost both ways (issue 20: if it
#      passes and k = 4 costs at most 1.15x a decode step, it becomes the
#      default);
#   1. test_cuda_backend as is, with NC_CUDA_FP8_ACT=1 (fp8 products of 65+
#      rows on the fp8 tensor cores, the test's looser bound for that run)
#      with NC_CUDA_ATTN_PREFETCH=1 (decode attention keeping the next
#      chunk in flight) and with NC_CUDA_GEMV_ROWS=1 (8-bit products of 2..8
#      rows on the skinny GEMM instead of the tensor-core GEMV);
#   2. `nanochat bench --random d34`: bf16; fp8 prefill with NC_CUDA_FP8_ACT
#      (issue 14's target: 1.4x bf16); int8 / fp8 + fp8 KV with and without
#      NC_CUDA_ATTN_PREFETCH (batches 64 / 128); int8 at 4 rows per warp (the
#      default) and 2 (NC_CUDA_GEMV_Q8_ROWS=2; measured on an H200 only);
#   3. the logit error of fp8 and fp8 + NC_CUDA_FP8_ACT against bf16 on d34
#      shapes, 128 positions (one product of 128 rows);
#   4. with what is left: ncu, every kernel's time over the last int8 batch-1
#      decode steps (what bounds the 8-bit GEMVs), and the sections of one
#      fp8-cache decode attention kernel at batch 128.
# The bundle: `make -j2 gpu-bundle GPU_TESTS="test_cuda_backend test_spec_picochat"`.
#   usage: [SPEC_BUDGET=130] [BUDGET=330] bash tools/device/switches_check.sh
cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-/tmp/nc-device-out}
OUT=$OUT/spec BUDGET=${SPEC_BUDGET:-130} ROUNDS=2 bash tools/device/spec_check.sh >/tmp/spec_check.txt 2>&1
tail -n 42 /tmp/spec_check.txt
BUDGET=${BUDGET:-330}
. tools/device/common.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)

step test_cuda_backend_default 60 test_cuda_backend
step test_cuda_backend_fp8act 60 env NC_CUDA_FP8_ACT=1 test_cuda_backend
step test_cuda_backend_prefetch 60 env NC_CUDA_ATTN_PREFETCH=1 test_cuda_backend
step test_cuda_backend_rows1 60 env NC_CUDA_GEMV_ROWS=1 test_cuda_backend
grep -hE "checks|FAIL|fp8 weights.*worst" "$OUT"/test_cuda_backend_*.log | head -16

runs=()
M="--random d34 --device cuda"
A="--prefill 2048 --ctx 128,1024 --batch 64,128 --steps 32 --batch-steps 8 --json"
B="--prefill 0 --ctx none --batch 64,128 --batch-steps 8 --json"
P="--prefill 2048 --ctx none --batch none --json"
bench() { # label, environment assignment (or ""), bench arguments...
    local label=$1 env_set=$2
    shift 2
    step "bench_$label" 40 env $env_set nanochat bench $M "$@"
    runs+=(--run "${label%_2}" "$OUT/bench_${label//[^A-Za-z0-9._-]/_}.log")
}
bench bf16 "" $A --weights bf16
bench fp8+act NC_CUDA_FP8_ACT=1 $P --weights fp8
bench int8+fp8kv "" $A --weights int8 --kv-cache fp8
bench int8+fp8kv+PF NC_CUDA_ATTN_PREFETCH=1 $B --weights int8 --kv-cache fp8
bench fp8+fp8kv "" $A --weights fp8 --kv-cache fp8
bench fp8+fp8kv+PF NC_CUDA_ATTN_PREFETCH=1 $B --weights fp8 --kv-cache fp8
bench int8 "" $A --weights int8
bench int8R2 NC_CUDA_GEMV_Q8_ROWS=2 $A --weights int8
bench fp8 "" $A --weights fp8
bench fp8+act_2 NC_CUDA_FP8_ACT=1 $P --weights fp8
python3 tools/device/bench_table.py "${runs[@]}" | grep -v '^TABLE'

# fp32 logits [128, 65536] per mode, then the errors against bf16
ids=$(python3 -c 'print(" ".join(str((i * 7919 + 13) % 65536) for i in range(128)))')
for m in "bf16:" "fp8:" "fp8act:NC_CUDA_FP8_ACT=1"; do
    label=${m%%:*} weights=${m%%:*}
    [ "$weights" = fp8act ] && weights=fp8
    step "logits_$label" 30 env ${m#*:} nanochat forward $M --weights "$weights" --ids "$ids" --out "$OUT/logits_$label.f32"
done
python3 - "$OUT" <<'PY'
import sys, numpy as np
out = sys.argv[1]
try:
    ref = np.fromfile(f"{out}/logits_bf16.f32", dtype=np.float32).reshape(128, -1).astype(np.float64)
except (OSError, ValueError) as e:
    sys.exit(print("no bf16 logits:", e))
for mode in ["fp8", "fp8act"]:
    try:
        x = np.fromfile(f"{out}/logits_{mode}.f32", dtype=np.float32).reshape(128, -1).astype(np.float64)
    except (OSError, ValueError) as e:
        print(f"{mode}: no logits: {e}")
        continue
    mx = np.abs(x - ref).max(1) / np.abs(ref).max(1)
    rms = np.sqrt(((x - ref) ** 2).mean(1)) / np.sqrt((ref ** 2).mean(1))
    print(f"logit error {mode:<7} max abs / max abs: median {100 * np.median(mx):.2f}% worst {100 * mx.max():.2f}%;"
          f" RMS median {100 * np.median(rms):.2f}%")
PY
rm -f "$OUT"/logits_*.f32

if [ -n "$NCU" ]; then
    S="--clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy"
    S="$S --section WarpStateStats --section SchedulerStats --section LaunchStats"
    step ncu_b1_int8_times 45 "$NCU" --clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum \
        --csv --launch-count 1400 nanochat bench $M --weights int8 --prefill 0 --ctx 1024 --batch none --steps 2
    step ncu_b128_fp8kv_attn 30 "$NCU" $S --kernel-name regex:attn_decode_kernel --launch-skip 102 --launch-count 1 \
        nanochat bench $M --weights int8 --kv-cache fp8 --prefill 0 --ctx none --batch 128 --batch-steps 2
    [ -f "$OUT/ncu_b1_int8_times.log" ] && python3 tools/device/ncu_step_table.py "$OUT/ncu_b1_int8_times.log"
    [ -f "$OUT/ncu_b128_fp8kv_attn.log" ] && grep -E "Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Theoretical Occ|No Eligible|Issued Warp" \
        "$OUT/ncu_b128_fp8kv_attn.log" | head -24
fi
summary
