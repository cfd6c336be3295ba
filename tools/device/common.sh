# shellcheck shell=bash
# tools/device/common.sh: the preamble every device script sources.
#
# The device scripts run on a GPU machine from a copy of this repository
# (they read tests/, tools/ and models/ from it) with the programs of a `make
# gpu-bundle` beside it, because such machines lack the development packages
# the build needs. Sourcing this file:
#   - moves to the repository root and creates OUT (default /tmp/nc-device-out);
#   - puts GPU_BUNDLE's bin/ first on PATH and its lib/ on the library path
#     (GPU_BUNDLE: default build/gpu-bundle, relative to the root or
#     absolute), and stops when the bundle or one of nanochat's libraries is
#     missing;
#   - sets NANOCHAT_MODEL to models/picochat (the demo model, and the
#     tokenizer `--random` models use);
#   - prints the card (name, memory, SM clock now and max, memory clock,
#     driver) and the bundle's BUNDLE.txt, and keeps both in OUT;
#   - starts the clock: the script has BUDGET seconds (default 570) in all.
# Then:
#   step NAME SECS CMD...   runs CMD, its output in $OUT/NAME.log, under a
#                           timeout of SECS cut to the time left (skipped
#                           when under 15 s are left); adds a summary row
#                           with the exit status, the seconds and the log's
#                           last line; returns CMD's status
#   left                    seconds left of BUDGET
#   note TEXT               adds a summary row
#   summary                 prints the rows under "==== summary" and the total
# On exit everything written under OUT is packed into $OUT/logs.tar.gz (few
# files come back more easily than many); machine.txt and summary.txt stay.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
ROOT=$PWD
OUT=${OUT:-/tmp/nc-device-out}
mkdir -p "$OUT"
GPU_BUNDLE=${GPU_BUNDLE:-build/gpu-bundle}
case $GPU_BUNDLE in /*) ;; *) GPU_BUNDLE=$ROOT/$GPU_BUNDLE ;; esac
if [ ! -x "$GPU_BUNDLE/bin/nanochat" ]; then
    echo "no bundle at $GPU_BUNDLE: build one with \`make gpu-bundle GPU_BUNDLE=...\` and bring it" \
        "along (README: Running a build on a GPU machine)" >&2
    exit 2
fi
export PATH="$GPU_BUNDLE/bin:$PATH"
export LD_LIBRARY_PATH="$GPU_BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NANOCHAT_MODEL=${NANOCHAT_MODEL:-$ROOT/models/picochat}
export NC_BIN=$GPU_BUNDLE/bin/nanochat
export PYTHONUNBUFFERED=1
if ldd "$NC_BIN" | grep -q "not found"; then
    echo "nanochat cannot load its libraries here:" >&2
    ldd "$NC_BIN" | grep "not found" >&2
    exit 2
fi

BUDGET=${BUDGET:-570}
T0=$SECONDS
DEADLINE=$((T0 + BUDGET))
SUMMARY=()

{
    nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem,driver_version \
        --format=csv,noheader 2>&1 | sed 's/^/gpu:     /'
    cat "$GPU_BUNDLE/BUNDLE.txt"
} | tee "$OUT/machine.txt"

left() { echo $((DEADLINE - SECONDS)); }

note() { SUMMARY+=("$*"); }

step() {
    local name=$1 secs=$2
    shift 2
    local remaining=$((DEADLINE - SECONDS))
    if [ $remaining -lt 15 ]; then
        note "$(printf '%-36s skipped: the budget (BUDGET=%s s) is spent' "$name" "$BUDGET")"
        return 125
    fi
    [ "$secs" -gt $remaining ] && secs=$remaining
    local log="$OUT/${name//[^A-Za-z0-9._-]/_}.log" t0=$SECONDS rc last
    timeout -k 10 "$secs" "$@" >"$log" 2>&1
    rc=$?
    last=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | cut -c1-100)
    [ $rc -eq 124 ] && last="timed out after $secs s"
    note "$(printf '%-36s rc=%-3s %4d s  %s' "$name" "$rc" $((SECONDS - t0)) "$last")"
    return $rc
}

summary() {
    echo "==== summary ($(head -n 1 "$OUT/machine.txt" | cut -c10-))"
    printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
    echo "total $((SECONDS - T0)) s; logs in $OUT/logs.tar.gz"
}

pack_logs() {
    (
        cd "$OUT" || exit 0
        files=$(find . -mindepth 1 -type f ! -path ./logs.tar.gz ! -path ./summary.txt ! -path ./machine.txt | sort)
        [ -n "$files" ] || exit 0
        tar -czf logs.tar.gz.new $files && rm -f $files && mv logs.tar.gz.new logs.tar.gz
        find . -mindepth 1 -type d -empty -delete
    )
}
trap pack_logs EXIT
