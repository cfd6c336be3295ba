#!/usr/bin/env bash
# bench_cpu_quant.sh: CPU batch-1 decode of `--random d20` with bf16, int8
# and fp8 weights (docs/quantization.md), interleaved in one run.
#
# The machine may be shared, so every round runs each mode once, at each
# thread count, in turn; the table gives each mode's median tok/s over the
# rounds and the median over the rounds of its ratio to the bf16 run just
# before it (the load of the moment changes within seconds less often than
# between rounds). Modes:
#   bf16            the checkpoint's bf16 weights (today's path)
#   int8            --weights int8, default kernels (AVX512-VNNI / AVX-VNNI
#                   with q8 activations where the CPU has them)
#   int8-avx2       --weights int8 with NC_CPU_KERNELS=avx2 (weight-only)
#   fp8             --weights fp8
# Each measurement is `nanochat bench --prefill 0 --ctx 128 --batch none
# --steps STEPS` (median step of STEPS greedy tokens after a warm-up).
#
#   [BUILD=build] [THREADS="1 2"] [STEPS=16] bash dev/kernels/bench_cpu_quant.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
ROUNDS=${1:-5}
THREADS=${THREADS:-1 2}
STEPS=${STEPS:-16}
MODES=(bf16 int8 int8-avx2 fp8)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
run() { # mode threads -> tok/s
    local mode=$1 t=$2 env=() w=$1
    if [ "$mode" = int8-avx2 ]; then env=(NC_CPU_KERNELS=avx2); w=int8; fi
    env "${env[@]}" "$BUILD/nanochat" bench --random d20 --device cpu --weights "$w" --threads "$t" \
        --prefill 0 --ctx 128 --batch none --steps "$STEPS" 2>&1 | awk '/^decode ctx 128/ {print $4}'
}
for r in $(seq "$ROUNDS"); do
    line="round $r ($(cut -d' ' -f1 /proc/loadavg) load):"
    for t in $THREADS; do
        for m in "${MODES[@]}"; do
            v=$(run "$m" "$t")
            echo "$r $t $m $v" >>"$OUT"
            line="$line $m/$t=$v"
        done
    done
    echo "$line"
done
python3 - "$OUT" "${MODES[*]}" "$THREADS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 4]
modes, threads = sys.argv[2].split(), sys.argv[3].split()
tok = {(r, t, m): float(v) for r, t, m, v in rows}
rounds = sorted({r for r, _, _, _ in rows})
def med(t, m):
    return statistics.median(tok[r, t, m] for r in rounds)
def ratio(t, m):
    return statistics.median(tok[r, t, m] / tok[r, t, "bf16"] for r in rounds)
print(f"\n| d20 batch-1 decode, ctx 128 | " + " | ".join(f"{t} thread{'s' if t != '1' else ''}" for t in threads) + " |")
print("|---|" + "---:|" * len(threads))
for m in modes:
    cells = [f"{med(t, m):.1f} tok/s ({ratio(t, m):.2f}x)" for t in threads]
    print(f"| {m} | " + " | ".join(cells) + " |")
EOF
