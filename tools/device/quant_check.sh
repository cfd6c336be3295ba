#!/usr/bin/env bash
# tools/device/quant_check.sh: one device call for the 8-bit weights and the
# fp8 KV cache (docs/quantization.md), under BUDGET (default 480 s):
#   1. dev/kernels/gemm_q8 (the 8-bit GEMV and GEMMs against a CPU reference,
#      timed beside bf16 on d34 shapes; HARNESS_ARGS=all adds d20);
#   2. test_cuda_backend: every weight format x KV format against PyTorch's
#      quantised references and the CPU backend;
#   3. `nanochat bench --random d34` with --weights bf16 / int8 / fp8, and
#      int8 / fp8 with --kv-cache fp8, one after the other on the same card
#      (the floor counts 1-byte weights and D + 4 bytes per cached vector),
#      and the bundle's nanochat_base (bf16) when it has one;
#   4. the logit error of each mode against bf16 on d34 shapes (16
#      positions, random weights), as bench/RESULTS.md reports the CPU's;
#   5. compute-sanitizer memcheck on the quick test (which runs the 8-bit
#      fixtures and a small int8 + fp8-cache model);
#   6. with what is left: test_cuda_backend under NC_CUDA_SKINNY=0 (the
#      mma.sync GEMM for every 8-bit batch), and forward_dump hashes when
#      the bundle carries bin/forward_dump and bin/forward_dump_base (the
#      float lines must match; the 8-bit ones are new).
# Ends with the harness output, a bench table (bf16 as the reference
# column), the logit errors and the summary.
# The bundle: `make -j2 gpu-bundle GPU_BASE=<commit before the 8-bit kernels>`;
# forward_dump is a C program outside the bundle's targets: build it in both
# trees with the command at the top of dev/kernels/forward_dump.c and copy
# the two into the bundle's bin/ as forward_dump and forward_dump_base.
#   usage: [BUDGET=480] [HARNESS_ARGS=d34|d20|all] [ROUNDS=1] bash tools/device/quant_check.sh
. "$(dirname "$0")/common.sh"
: "${HARNESS_ARGS=d34}" "${ROUNDS=1}"
MODEL="--random d34 --device cuda"
BENCH_ARGS="--prefill 2048 --ctx 128,1024 --batch 64,128 --steps 32 --batch-steps 8"

step harness_gemm_q8 150 gemm_q8 $HARNESS_ARGS
step test_cuda_backend 200 test_cuda_backend

modes=("bf16:--weights bf16" "int8:--weights int8" "fp8:--weights fp8" "int8+fp8kv:--weights int8 --kv-cache fp8"
       "fp8+fp8kv:--weights fp8 --kv-cache fp8")
runs=()
bench() { # label, program, arguments...
    local label=$1 prog=$2 log="bench_${1}_$round"
    shift 2
    step "$log" 120 "$prog" bench $MODEL "$@" --json $BENCH_ARGS
    runs+=(--run "$label" "$OUT/${log//[^A-Za-z0-9._-]/_}.log")
}
for round in $(seq 1 "$ROUNDS"); do
    for m in "${modes[@]}"; do
        bench "${m%%:*}" nanochat ${m#*:}
    done
    # the build before the 8-bit kernels, when the bundle has it (make gpu-bundle GPU_BASE=<commit>)
    [ -x "$GPU_BUNDLE/bin/nanochat_base" ] && bench base-bf16 nanochat_base
done

# Logits of 16 positions per mode (fp32 [16, 65536]), then errors against bf16.
ids=$(python3 -c 'print(" ".join(str((i * 7919 + 13) % 65536) for i in range(16)))')
for m in "${modes[@]}"; do
    label=${m%%:*} args=${m#*:}
    step "logits_$label" 60 nanochat forward $MODEL $args --ids "$ids" --out "$OUT/logits_$label.f32"
done
step logit_error 30 python3 - "$OUT" <<'EOF'
import sys, numpy as np
out = sys.argv[1]
ref = np.fromfile(f"{out}/logits_bf16.f32", dtype=np.float32).reshape(16, -1).astype(np.float64)
print(f"{'mode':<12} {'max abs err / max abs logit per row: median (worst)':>52} {'RMS err / RMS logit: median':>28} {'argmax agree':>13}")
for mode in ["int8", "fp8", "int8+fp8kv", "fp8+fp8kv"]:
    x = np.fromfile(f"{out}/logits_{mode}.f32", dtype=np.float32).reshape(16, -1).astype(np.float64)
    mx = np.abs(x - ref).max(1) / np.abs(ref).max(1)
    rms = np.sqrt(((x - ref) ** 2).mean(1)) / np.sqrt((ref ** 2).mean(1))
    agree = (x.argmax(1) == ref.argmax(1)).mean()
    print(f"{mode:<12} {100 * np.median(mx):>42.2f}% ({100 * mx.max():.2f}%) {100 * np.median(rms):>27.2f}% {100 * agree:>12.0f}%")
EOF
rm -f "$OUT"/logits_*.f32

step sanitizer 240 env NC_CUDA_TEST_QUICK=1 \
    compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 test_cuda_backend
step test_cuda_backend_NC_CUDA_SKINNY=0 150 env NC_CUDA_SKINNY=0 test_cuda_backend
if [ -x "$GPU_BUNDLE/bin/forward_dump" ] && [ -x "$GPU_BUNDLE/bin/forward_dump_base" ]; then
    step forward_dump_base_1 90 forward_dump_base cuda
    step forward_dump_base_2 90 forward_dump_base cuda
    step forward_dump_new 150 forward_dump cuda
    b1=$OUT/forward_dump_base_1.log b2=$OUT/forward_dump_base_2.log new=$OUT/forward_dump_new.log
    note "forward_dump: $(diff "$b1" "$b2" | grep -c '^<') lines differ between two base runs," \
        "$(diff "$b1" <(head -n "$(wc -l <"$b1")" "$new") | grep -c '^<') between base and new (float sections)"
fi

echo "==== harness gemm_q8"
cat "$OUT/harness_gemm_q8.log" 2>/dev/null
echo "==== logit error against bf16 (d34 shapes, random weights, 16 positions)"
cat "$OUT/logit_error.log" 2>/dev/null
grep -h "worst relative logit error\|MISMATCH\|FAIL" "$OUT/test_cuda_backend.log" 2>/dev/null | head -40
if [ ${#runs[@]} -gt 0 ]; then
    echo "==== bench ($MODEL $BENCH_ARGS; ratio to bf16)"
    python3 tools/device/bench_table.py "${runs[@]}"
    echo "==== each mode against its own floor (its bytes as it stores them)"
    python3 - "${runs[@]}" <<'EOF'
import json, sys
a = sys.argv[1:]
for i in range(0, len(a), 3):
    label, path, doc = a[i + 1], a[i + 2], None
    for line in open(path, errors="replace"):
        if line.startswith("{"):
            doc = json.loads(line)
    for r in (doc or {}).get("results", []):
        extra = f"{r['tflops']:.0f} TFLOP/s" if r.get("tflops", 0) > 0 else f"{r['floor_pct']:.1f}% of floor, {r['gb_s']:.0f} GB/s"
        print(f"{label:<11} {r['test']:<22} {r['tok_s']:>10,.1f} tok/s  {r['ms']:8.3f} ms  {extra}")
EOF
fi
summary
