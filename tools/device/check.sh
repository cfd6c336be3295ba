#!/usr/bin/env bash
# tools/device/check.sh: one device call for a CUDA change, under BUDGET
# (default 570 s): the dev/kernels harnesses of the kernels touched,
# test_cuda_backend as built and under the switches the change affects,
# compute-sanitizer, then `nanochat bench` of the new build, of the old one
# (bin/nanochat_base, when the bundle has it: `make gpu-bundle
# GPU_BASE=<commit>`) and of the new one under other switch settings, in
# interleaved rounds on the same card, then per-stage profiles
# (NC_CUDA_PROFILE=1) while time is left. Ends with the harness output, the
# profiles, a table of the benches (old build, or else the new one, as the
# reference column) and the summary.
#   usage: [VARIABLE=value ...] bash tools/device/check.sh [PRESET]
#
# Presets (what each sets; any variable set in the environment wins):
#   all      gemv harness; tests as built, NC_CUDA_PDL=0, NC_CUDA_GRAPHS=0;
#            sanitizer; the full bench, also with NC_CUDA_PDL=0; profiles of
#            prefill 2048, decode @1024 and batch 128 (the default)
#   test     the tests and the sanitizer only
#   decode   gemv harness; tests as built and NC_CUDA_PDL=0; decode @128/1024
#            and batches 4, 64 with PDL on and off, two rounds; profile of
#            decode @1024
#   prefill  attn_prefill harness; tests; prefill 2048 of the builds and with
#            NC_CUDA_FA=1, five rounds; profile of prefill 2048
#   skinny   tests with and without the wgmma skinny GEMM (NC_CUDA_SKINNY=0)
#            and NC_CUDA_PDL=0; sanitizer; batches 2..128 both ways, two
#            rounds (SERVE=1 adds the server benchmark both ways)
#   ab       tests as built and NC_CUDA_PDL=0; prefill, decode and batches 8,
#            64, 128 of the old and new build, two rounds; profile of batch 128
# Variables:
#   HARNESS        harnesses to run first (bundle programs: gemv,
#                  attn_prefill, gemm_tune, gemm_search)
#   TEST_VARIANTS  settings test_cuda_backend also runs under
#   SANITIZER      1: compute-sanitizer memcheck on the quick test
#   BENCH_ARGS     `nanochat bench` arguments after the model's
#   VARIANTS       settings the new build is also benched under
#   ROUNDS         interleaved rounds of the benches (0: no bench)
#   PROFILES       ';'-separated bench arguments of NC_CUDA_PROFILE=1 runs
#   SERVE          1: tools/device/serve_bench.sh for each build and setting
#   MODEL          model arguments (default --random d34 --device cuda)
. "$(dirname "$0")/common.sh"
preset=${1:-all}
decode_profile="--prefill 0 --ctx 1024 --batch none --steps 16"
prefill_profile="--prefill 2048 --ctx none --batch none"
case $preset in
all)
    : "${HARNESS=gemv}" "${TEST_VARIANTS=NC_CUDA_PDL=0 NC_CUDA_GRAPHS=0}" "${SANITIZER=1}" "${BENCH_ARGS=}"
    : "${VARIANTS=NC_CUDA_PDL=0}" "${ROUNDS=1}"
    : "${PROFILES=$prefill_profile;$decode_profile;--prefill 0 --ctx none --batch 128 --batch-steps 8}" ;;
test)
    : "${HARNESS=}" "${TEST_VARIANTS=NC_CUDA_PDL=0 NC_CUDA_GRAPHS=0}" "${SANITIZER=1}" "${ROUNDS=0}" "${PROFILES=}" ;;
decode)
    : "${HARNESS=gemv}" "${TEST_VARIANTS=NC_CUDA_PDL=0}" "${BENCH_ARGS=--prefill 0 --ctx 128,1024 --batch 4,64}"
    : "${VARIANTS=NC_CUDA_PDL=0}" "${ROUNDS=2}" "${PROFILES=$decode_profile}" ;;
prefill)
    : "${HARNESS=attn_prefill}" "${TEST_VARIANTS=}" "${BENCH_ARGS=$prefill_profile}" "${VARIANTS=NC_CUDA_FA=1}"
    : "${ROUNDS=5}" "${PROFILES=$prefill_profile}" ;;
skinny)
    : "${HARNESS=}" "${TEST_VARIANTS=NC_CUDA_SKINNY=0 NC_CUDA_PDL=0}" "${SANITIZER=1}"
    : "${BENCH_ARGS=--prefill 0 --ctx none --batch 2,4,8,16,32,48,64,96,128}" "${VARIANTS=NC_CUDA_SKINNY=0}"
    : "${ROUNDS=2}" "${PROFILES=}" ;;
ab)
    : "${HARNESS=}" "${TEST_VARIANTS=NC_CUDA_PDL=0}" "${BENCH_ARGS=--prefill 2048 --ctx 128,1024 --batch 8,64,128}"
    : "${VARIANTS=}" "${ROUNDS=2}" "${PROFILES=--prefill 0 --ctx none --batch 128 --batch-steps 4}" ;;
*)
    echo "check.sh: unknown preset '$preset' (all, test, decode, prefill, skinny, ab)" >&2
    exit 2 ;;
esac
: "${SANITIZER=0}" "${BENCH_ARGS=}" "${VARIANTS=}" "${SERVE=0}" "${MODEL=--random d34 --device cuda}"

for h in $HARNESS; do
    step "harness_$h" 120 "$h"
done
step test_cuda_backend 150 test_cuda_backend
for v in $TEST_VARIANTS; do
    step "test_cuda_backend_$v" 120 env "$v" test_cuda_backend
done
if [ "$SANITIZER" = 1 ]; then
    step sanitizer 240 env NC_CUDA_TEST_QUICK=1 \
        compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 test_cuda_backend
fi

# The benches, as bench_table.py arguments; the reference first.
builds=nanochat
[ -x "$GPU_BUNDLE/bin/nanochat_base" ] && builds="nanochat_base nanochat"
runs=()
bench() { # label, program, env settings...
    local label=$1 prog=$2 log="bench_${1}_$round"
    shift 2
    step "$log" 150 env "$@" "$prog" bench $MODEL --json $BENCH_ARGS
    runs+=(--run "$label" "$OUT/${log//[^A-Za-z0-9._-]/_}.log")
}
round_s=0
for round in $(seq 1 "$ROUNDS"); do
    if [ $round -gt 1 ] && [ "$(left)" -lt $((round_s + 60)) ]; then
        note "bench: stopped after $((round - 1)) rounds (BUDGET)"
        break
    fi
    t0=$SECONDS
    for b in $builds; do
        bench "$b" "$b"
    done
    for v in $VARIANTS; do
        bench "$v" nanochat "$v"
    done
    round_s=$((SECONDS - t0))
done

if [ "$SERVE" = 1 ]; then
    for b in $builds; do
        step "serve_$b" 240 env OUT="$OUT/serve_$b" BIN="$b" bash tools/device/serve_bench.sh
    done
    for v in $VARIANTS; do
        step "serve_$v" 240 env OUT="$OUT/serve_$v" "$v" bash tools/device/serve_bench.sh
    done
fi

IFS=';' read -r -a profiles <<<"${PROFILES:-}"
i=0
for args in "${profiles[@]}"; do
    i=$((i + 1))
    for b in $builds; do
        step "profile_${i}_$b" 60 env NC_CUDA_PROFILE=1 "$b" bench $MODEL $args
    done
done

for h in $HARNESS; do
    echo "==== harness $h"
    tail -n 30 "$OUT/harness_$h.log" 2>/dev/null
done
i=0
for args in "${profiles[@]}"; do
    i=$((i + 1))
    for b in $builds; do
        [ -f "$OUT/profile_${i}_$b.log" ] || continue
        echo "==== profile ($b): bench $args"
        grep -E "^  " "$OUT/profile_${i}_$b.log"
    done
done
if [ "$SERVE" = 1 ]; then
    echo "==== server"
    for log in "$OUT"/serve_*.log; do
        echo "$(basename "$log" .log): $(grep -m1 -E 'throughput' "$log")"
    done
fi
if [ ${#runs[@]} -gt 0 ]; then
    echo "==== bench ($MODEL; best of rounds, range, ratio to the first column)"
    python3 tools/device/bench_table.py "${runs[@]}"
fi
summary
