#!/usr/bin/env bash
# bench_cpu_decode.sh: CPU batch-1 decode of `--random d20` against the
# machine's memory-bandwidth floor, both measured in the same run.
#
# The machine may be shared (other builds and tests), so the measurements
# alternate ROUNDS times and each keeps its best:
#   - bandwidth: dev/kernels/membw.c, a threaded read (sum) of a 1 GiB
#     buffer with 1..N threads, in 4 KB pages and in 2 MB pages (--huge).
#     The weights of nc_model_random live in 2 MB pages (as do checkpoint
#     weights once the CPU backend copies them, NC_CPU_WEIGHTS=auto), so
#     the floor uses the faster, 2 MB-page figure;
#   - decode: `nanochat bench --prefill 0 --ctx 128 --batch none`, median
#     step of --steps greedy tokens; with BASELINE=<other nanochat binary>
#     that binary is timed in the same rounds too.
# Floor = weight bytes read per token (printed by bench: every matrix, the
# lm_head rows of the real vocab, one wte row) / best read bandwidth. The
# KV cache read by attention (~26 MB per token at ctx 128) is not counted,
# which makes the fraction slightly pessimistic.
#
#   BUILD=build-cpu [BASELINE=path/nanochat] bash dev/kernels/bench_cpu_decode.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
ROUNDS=${1:-3}
BASELINE=${BASELINE:-}
cc -O2 -std=c11 -D_GNU_SOURCE -pthread -Isrc dev/kernels/membw.c "$BUILD/libnanochat.a" -lm -o "$BUILD/membw"
best() { awk -v a="$1" -v b="$2" 'BEGIN {print (b > a) ? b : a}'; }
decode() {
    "$1" bench --random d20 --device cpu --prefill 0 --ctx 128 --batch none --steps 16 2>&1
}
best_bw4=0 best_bw2=0 best_tok=0 best_base=0 bytes="" out=""
for r in $(seq "$ROUNDS"); do
    bw4=$("$BUILD/membw" --mb 1024 --reps 3 | awk '/best read bandwidth/ {print $4}')
    bw2=$("$BUILD/membw" --mb 1024 --reps 3 --huge | awk '/best read bandwidth/ {print $4}')
    out=$(decode "$BUILD/nanochat")
    tok=$(echo "$out" | awk '/^decode ctx 128/ {print $4}')
    bytes=$(echo "$out" | awk '/GB of weights read per decode step/ {for (i = 1; i <= NF; i++) if ($i == "GB") print $(i-1)}')
    line="round $r: read bandwidth $bw4 GB/s (4 KB pages), $bw2 GB/s (2 MB pages); decode $tok tok/s"
    if [ -n "$BASELINE" ]; then
        base=$(decode "$BASELINE" | awk '/^decode ctx 128/ {print $4}')
        line="$line; baseline $base tok/s"
        best_base=$(best "$best_base" "$base")
    fi
    echo "$line"
    best_bw4=$(best "$best_bw4" "$bw4")
    best_bw2=$(best "$best_bw2" "$bw2")
    best_tok=$(best "$best_tok" "$tok")
done
echo "$out" | head -3
awk -v bw4="$best_bw4" -v bw="$best_bw2" -v tok="$best_tok" -v gb="$bytes" -v base="$best_base" 'BEGIN {
    bw = bw > bw4 ? bw : bw4
    floor = bw / gb
    printf "best: read bandwidth %.2f GB/s (4 KB pages), %.2f GB/s (2 MB pages) -> floor %.2f tok/s (%.3f GB/token)\n",
        bw4, bw, floor, gb
    printf "best: decode %.2f tok/s = %.0f%% of the floor", tok, 100 * tok / floor
    if (base > 0) printf "; baseline %.2f tok/s = %.0f%%", base, 100 * base / floor
    printf "\n" }'
