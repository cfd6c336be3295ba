#!/usr/bin/env bash
# tools/device/persist_check.sh: one device call for the persistent batch-1
# decode kernel (src/backend/cuda/cuda_persist.cu), under BUDGET (default
# 480 s): test_cuda_persist (fixtures, CPU and graph-path comparisons with
# bf16, int8 and fp8 matrices and the fp8 cache, the 100k-step stress);
# `nanochat bench` batch-1 decode at 128 / 1024 / 4096 context of d34 and
# d20 (bf16) and d34 with int8 matrices, each with NC_CUDA_PERSIST=0 (the
# graph path, the reference column) and =1; the per-stage profile of both
# paths on d34 @1024 (NC_CUDA_PROFILE=1: the persistent kernel's stage
# times come from CTA 0's clock at each grid barrier, a stage's wait
# included); compute-sanitizer memcheck and racecheck on the test's quick
# case; a second bench round while time is left; then test_cuda_backend
# with NC_CUDA_PERSIST=1 (every batch-1 decode step of it runs the
# persistent kernel). The ring size stays at its default unless
# NC_CUDA_PERSIST_BUFS is set. Ends with the profiles, the test's summary
# lines, one bench table per model and the summary.
#
# SWEEP=1 instead (BUDGET default 240 s): for each ring size in SETTINGS
# (NC_CUDA_PERSIST_BUFS; "auto": the default, as many slots as fit)
# test_cuda_persist's quick run (NC_CUDA_TEST_QUICK=1: every setting must
# be correct), then d34 and d20 batch-1 decode @1024 for the graph path and
# every setting; one table per model last (ratio to the graph path).
#   usage: [BUDGET=480] [ROUNDS=2] bash tools/device/persist_check.sh
#          SWEEP=1 [BUDGET=240] [SETTINGS="2 3 4 auto"] bash tools/device/persist_check.sh
if [ "${SWEEP:-0}" = 1 ]; then
    BUDGET=${BUDGET:-240}
    . "$(dirname "$0")/common.sh"
    export NC_CUDA_PERSIST=1
    : "${SETTINGS=2 3 4 auto}"
    read -r -a settings <<<"$SETTINGS"
    knobs() { # slots -> env assignment
        if [ "$1" = auto ]; then echo "NC_CUDA_PERSIST_BUFS="; else echo "NC_CUDA_PERSIST_BUFS=$1"; fi
    }
    for set in "${settings[@]}"; do
        step "test_bufs_$set" 45 env "$(knobs "$set")" NC_CUDA_TEST_QUICK=1 test_cuda_persist
    done
    declare -A sweep
    for m in d34 d20; do
        step "bench_${m}_graphs" 40 env NC_CUDA_PERSIST=0 nanochat bench --random "$m" --device cuda \
            --prefill 0 --ctx 1024 --steps 32 --batch none --json
        sweep[$m]=" --run graphs $OUT/bench_${m}_graphs.log"
        for set in "${settings[@]}"; do
            log="bench_${m}_bufs_$set"
            step "$log" 40 env "$(knobs "$set")" nanochat bench --random "$m" --device cuda \
                --prefill 0 --ctx 1024 --steps 32 --batch none --json
            sweep[$m]+=" --run bufs=$set $OUT/$log.log"
        done
    done
    echo "==== test_cuda_persist (quick) per ring size"
    for set in "${settings[@]}"; do
        printf '%-10s %s\n' "$set" "$(grep -E "checks|FAIL|error:" "$OUT/test_bufs_$set.log" 2>/dev/null | tail -n 3 | tr '\n' ' ')"
    done
    for m in d34 d20; do
        echo "==== $m batch-1 decode @1024 (ring slots; ratio to the graph path)"
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
    for m in d34 d20 d34_int8; do
        local w=bf16
        [ "$m" = d34_int8 ] && w=int8
        for v in 0 1; do
            log="bench_${m}_persist${v}_$1"
            step "$log" 90 env NC_CUDA_PERSIST=$v nanochat bench --random "${m%_int8}" --weights "$w" \
                --device cuda "${bench_args[@]}"
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
for m in d34 d20 d34_int8; do
    echo "==== $m batch-1 decode (best of rounds; ratio to the graph path, NC_CUDA_PERSIST=0)"
    # shellcheck disable=SC2086
    python3 tools/device/bench_table.py ${runs[$m]}
done
summary
