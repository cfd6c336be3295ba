#!/usr/bin/env bash
# tools/device/fp8_act_check.sh: fp8 weights with e4m3 input rows
# (NC_CUDA_FP8_ACT, docs/quantization.md) in one device call, under BUDGET
# (default 420 s):
#   1. test_cuda_backend as built and with NC_CUDA_FP8_ACT=1 (its looser
#      logit bound);
#   2. `nanochat bench --random d34`, prefill 2048 and batches 64 / 128 at
#      512: bf16, fp8 + fp8 KV weight-only, fp8 + fp8 KV with e4m3 rows, and
#      the same with the old build (bin/nanochat_base, `make gpu-bundle
#      GPU_BASE=<commit>`, or BASE=path) where there is one; two rounds;
#   3. picochat's bits per byte on the held-out text with e4m3 rows against
#      bf16 (`nanochat eval --device cuda`);
#   4. per-stage GPU time (NC_CUDA_PROFILE=1) of batch 128 at 512 context
#      with int8 + fp8 KV and with fp8 + fp8 KV and e4m3 rows, and of prefill
#      2048 with e4m3 rows: what bounds issue 14's batched and prefill targets;
#   5. the 64-client server (tools/device/serve_bench.sh) with bf16, int8 +
#      fp8 KV and fp8 + fp8 KV, as long as time is left.
#   usage: [BASE=path/to/nanochat] [BUDGET=420] bash tools/device/fp8_act_check.sh
. "$(dirname "$0")/common.sh"
BASE=${BASE:-$GPU_BUNDLE/bin/nanochat_base}
[ -x "$BASE" ] || BASE=

step test_cuda_backend 60 test_cuda_backend
step test_cuda_backend_fp8act 60 env NC_CUDA_FP8_ACT=1 test_cuda_backend
runs=()
M="--random d34 --device cuda"
P="--prefill 2048 --ctx none --batch 64,128 --batch-steps 8 --json"
bench() { # label, program, environment assignment (or ""), bench arguments...
    local label=$1 bin=$2 env_set=$3
    shift 3
    step "bench_$label" 45 env $env_set "$bin" bench $M "$@"
    runs+=(--run "${label%_[0-9]}" "$OUT/bench_${label//[^A-Za-z0-9._-]/_}.log")
}
for r in 1 2; do
    bench bf16_$r nanochat "" $P --weights bf16
    [ -n "$BASE" ] && bench base_act_$r "$BASE" NC_CUDA_FP8_ACT=1 $P --weights fp8 --kv-cache fp8
    bench act_$r nanochat NC_CUDA_FP8_ACT=1 $P --weights fp8 --kv-cache fp8
done
bench fp8 nanochat "" $P --weights fp8 --kv-cache fp8
E="eval -m models/picochat --device cuda --text tests/data/heldout/devils_dictionary.txt --compare bf16 --chats 3 --json"
step eval_fp8act 60 env NC_CUDA_FP8_ACT=1 nanochat $E --weights fp8
B128="--prefill 0 --ctx none --batch 128 --batch-steps 4"
step profile_b128_int8 40 env NC_CUDA_PROFILE=1 nanochat bench $M $B128 --weights int8 --kv-cache fp8
step profile_b128_act 40 env NC_CUDA_PROFILE=1 NC_CUDA_FP8_ACT=1 nanochat bench $M $B128 --weights fp8 --kv-cache fp8
step profile_prefill_act 40 env NC_CUDA_PROFILE=1 NC_CUDA_FP8_ACT=1 nanochat bench $M --prefill 2048 --ctx none \
    --batch none --weights fp8
for f in bf16:bf16 int8:fp8 fp8:fp8; do
    [ "$(left)" -gt 40 ] && OUT=$OUT/serve_${f%%:*} BUDGET=40 \
        MODEL_ARGS="--random d34 --device cuda --weights ${f%%:*} --kv-cache ${f#*:}" \
        bash "$ROOT/tools/device/serve_bench.sh" >"$OUT/serve_${f%%:*}.txt" 2>&1
done
echo "==== tests"; grep -hE "checks|FAIL" "$OUT"/test_cuda_backend*.log | head -20
echo "==== bench (better of two runs)"; python3 tools/device/bench_table.py "${runs[@]}" | grep -v '^TABLE'
echo "==== picochat bits per byte, e4m3 rows"; tail -c 700 "$OUT/eval_fp8act.log"; echo
for f in b128_int8 b128_act prefill_act; do
    echo "==== profile $f"
    grep -E "^  " "$OUT/profile_$f.log" 2>/dev/null
done
for f in bf16 int8 fp8; do
    echo "==== server, $f weights"
    grep -E "throughput|inter-token|TTFT|requests ok" "$OUT/serve_$f.txt" 2>/dev/null | head -8
done
summary
