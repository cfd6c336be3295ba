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
# second bench round while time is left; then test_cuda_backend with
# NC_CUDA_PERSIST=1 (every batch-1 decode step of it runs the persistent
# kernel). The tile knobs stay at their defaults unless set. Ends with the
# profiles, the test's summary lines, one bench table per model and the
# summary.
#
# SWEEP=1 instead (BUDGET default 240 s): for each setting of the tile
# knobs (NC_CUDA_PERSIST_TILE / _BUFS / _LOAD, docs/performance.md,
# Persistent decode) test_cuda_persist's quick run (NC_CUDA_TEST_QUICK=1:
# every setting must be correct), then d34 and d20 batch-1 decode @1024
# for the graph path and every setting; one table per model last (ratio to
# the graph path).
#   usage: [BUDGET=480] [ROUNDS=2] bash tools/device/persist_check.sh
#          SWEEP=1 [BUDGET=240] [SETTINGS="TILE/BUFS/LOAD ..."] bash tools/device/persist_check.sh
if [ "${SWEEP:-0}" = 1 ]; then
    BUDGET=${BUDGET:-240}
    . "$(dirname "$0")/common.sh"
    export NC_CUDA_PERSIST=1
    # TILE bytes / tiles in flight / smem or reg
    : "${SETTINGS=65536/2/smem 32768/3/smem 32768/4/smem 49152/3/smem 65536/2/reg 32768/4/reg 65536/4/reg}"
    read -r -a settings <<<"$SETTINGS"
    knobs() { # TILE/BUFS/LOAD -> env assignments
        local tile bufs load
        IFS=/ read -r tile bufs load <<<"$1"
        echo "NC_CUDA_PERSIST_TILE=$tile NC_CUDA_PERSIST_BUFS=$bufs NC_CUDA_PERSIST_LOAD=$load"
    }
    for set in "${settings[@]}"; do
        # shellcheck disable=SC2046
        step "test_${set//\//_}" 45 env $(knobs "$set") NC_CUDA_TEST_QUICK=1 test_cuda_persist
    done
    declare -A sweep
    for m in d34 d20; do
        step "bench_${m}_graphs" 40 env NC_CUDA_PERSIST=0 nanochat bench --random "$m" --device cuda \
            --prefill 0 --ctx 1024 --steps 32 --batch none --json
        sweep[$m]=" --run graphs $OUT/bench_${m}_graphs.log"
        for set in "${settings[@]}"; do
            log="bench_${m}_${set//\//_}"
            # shellcheck disable=SC2046
            step "$log" 40 env $(knobs "$set") nanochat bench --random "$m" --device cuda \
                --prefill 0 --ctx 1024 --steps 32 --batch none --json
            sweep[$m]+=" --run $set $OUT/$log.log"
        done
    done
    echo "==== test_cuda_persist (quick) per setting"
    for set in "${settings[@]}"; do
        printf '%-20s %s\n' "$set" "$(grep -E "checks|FAIL|error:" "$OUT/test_${set//\//_}.log" 2>/dev/null | tail -n 3 | tr '\n' ' ')"
    done
    for m in d34 d20; do
        echo "==== $m batch-1 decode @1024 (settings TILE/BUFS/LOAD; ratio to the graph path)"
        # shellcheck disable=SC2086
        python3 tools/device/bench_table.py ${sweep[$m]}
    done
    summary
    exit 0
fi

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
step test_cuda_backend 150 env NC_CUDA_PERSIST=1 test_cuda_backend

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
