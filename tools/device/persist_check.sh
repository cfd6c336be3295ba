#!/usr/bin/env bash
# tools/device/persist_check.sh: one device call for the persistent batch-1
# decode kernel (src/backend/cuda/cuda_persist.cu), under BUDGET (default
# 480 s): test_cuda_persist (fixtures, CPU and graph-path comparisons, the
# 100k-step stress); `nanochat bench` batch-1 decode at 128 / 1024 / 4096
# context of d34 and d20 with NC_CUDA_PERSIST=0 (the graph path, the
# reference column) and =1; the per-stage profile of both paths on d34
# @1024 (NC_CUDA_PROFILE=1: the persistent kernel's stage times come from
# CTA 0's clock at each grid barrier, a stage's wait included);
# compute-sanitizer memcheck and racecheck on the test's quick case; a
# second bench round while time is left; then test_cuda_backend (every
# batch-1 decode step of it runs the persistent kernel). Ends with the
# profiles, the test's summary lines, one bench table per model and the
# summary.
#   usage: [BUDGET=480] [ROUNDS=2] bash tools/device/persist_check.sh
BUDGET=${BUDGET:-480}
. "$(dirname "$0")/common.sh"
: "${ROUNDS=2}"
bench_args=(--prefill 0 --ctx "128,1024,4096" --batch none --json)
declare -A runs
bench_round() { # round
    local m v log
    for m in d34 d20; do
        for v in 0 1; do
            log="bench_${m}_persist${v}_$1"
            step "$log" 90 env NC_CUDA_PERSIST=$v nanochat bench --random "$m" --device cuda "${bench_args[@]}"
            runs[$m]+=" --run NC_CUDA_PERSIST=$v $OUT/$log.log"
        done
    done
}

step test_cuda_persist 150 test_cuda_persist
t0=$SECONDS
bench_round 1
round_s=$((SECONDS - t0))
for v in 1 0; do
    step "profile_d34_persist$v" 60 env NC_CUDA_PERSIST=$v NC_CUDA_PROFILE=1 \
        nanochat bench --random d34 --device cuda --prefill 0 --ctx 1024 --batch none --steps 16
done
step memcheck 90 env NC_CUDA_TEST_QUICK=1 \
    compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 test_cuda_persist
step racecheck 90 env NC_CUDA_TEST_QUICK=1 \
    compute-sanitizer --tool racecheck --error-exitcode 9 test_cuda_persist
for round in $(seq 2 "$ROUNDS"); do
    if [ "$(left)" -lt $((round_s + 150)) ]; then
        note "bench: round $round skipped (BUDGET)"
        break
    fi
    bench_round "$round"
done
step test_cuda_backend 150 test_cuda_backend

for v in 1 0; do
    echo "==== profile d34 decode @1024, NC_CUDA_PERSIST=$v"
    grep -E "^  " "$OUT/profile_d34_persist$v.log" 2>/dev/null
done
echo "==== test_cuda_persist"
grep -E "worst|stress|skipped|FAIL|checks" "$OUT/test_cuda_persist.log" 2>/dev/null | head -n 40
for m in d34 d20; do
    echo "==== $m batch-1 decode (best of rounds; ratio to the graph path, NC_CUDA_PERSIST=0)"
    # shellcheck disable=SC2086
    python3 tools/device/bench_table.py ${runs[$m]}
done
summary
