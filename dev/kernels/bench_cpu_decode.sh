#!/usr/bin/env bash
# bench_cpu_decode.sh: CPU batch-1 decode of `--random d20` against the
# machine's memory-bandwidth floor, both measured in the same run.
#
# The machine may be shared (other builds and tests), so the two
# measurements alternate ROUNDS times and each keeps its best:
#   - bandwidth: dev/kernels/membw.c, a threaded read (sum) of a 1 GiB
#     malloc'ed buffer (4 KB pages, like the weights) with 1..N threads;
#   - decode: `nanochat bench --prefill 0 --ctx 128 --batch none`, median
#     step of --steps greedy tokens.
# Floor = weight bytes read per token (printed by bench: every matrix, the
# lm_head rows of the real vocab, one wte row) / best read bandwidth.
#
#   BUILD=build-cpu bash dev/kernels/bench_cpu_decode.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
ROUNDS=${1:-3}
cc -O2 -std=c11 -D_GNU_SOURCE -pthread -Isrc dev/kernels/membw.c "$BUILD/libnanochat.a" -lm -o "$BUILD/membw"
best_bw=0 best_tok=0 bytes=""
for r in $(seq "$ROUNDS"); do
    bw=$("$BUILD/membw" --mb 1024 --reps 3 | awk '/best read bandwidth/ {print $4}')
    out=$("$BUILD/nanochat" bench --random d20 --device cpu --prefill 0 --ctx 128 --batch none --steps 16 2>&1)
    tok=$(echo "$out" | awk '/^decode ctx 128/ {print $4}')
    bytes=$(echo "$out" | awk '/GB of weights read per decode step/ {for (i = 1; i <= NF; i++) if ($i == "GB") print $(i-1)}')
    echo "round $r: read bandwidth $bw GB/s, decode $tok tok/s"
    best_bw=$(awk -v a="$best_bw" -v b="$bw" 'BEGIN {print (b > a) ? b : a}')
    best_tok=$(awk -v a="$best_tok" -v b="$tok" 'BEGIN {print (b > a) ? b : a}')
done
echo "$out" | head -3
awk -v bw="$best_bw" -v tok="$best_tok" -v gb="$bytes" 'BEGIN {
    floor = bw / gb
    printf "best: read bandwidth %.2f GB/s -> floor %.2f tok/s (%.3f GB/token); decode %.2f tok/s = %.0f%% of the floor\n",
        bw, floor, gb, tok, 100 * tok / floor }'
