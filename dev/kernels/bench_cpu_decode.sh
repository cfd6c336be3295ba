#!/usr/bin/env bash
# bench_cpu_decode.sh: CPU batch-1 decode of `--random d20` against the
# machine's honest floor, both measured in the same runs, optionally beside
# another build.
#
# `nanochat bench` measures the floor itself (util/membw.h: the run's
# threads reading max(1 GiB, 4x LLC) in 2 MB pages, best of 5 passes before
# and 5 after the tests) and prints decode as a % of it. The machine may be
# shared, so runs alternate ROUNDS times and the median of each is printed;
# with BASELINE=<other nanochat binary> that binary runs in the same rounds.
#
#   [THREADS=2] [BASELINE=path/nanochat] bash dev/kernels/bench_cpu_decode.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-build/nanochat}
ROUNDS=${1:-3}
BASELINE=${BASELINE:-}
THREADS=${THREADS:-0}
run() { # binary -> "tok/s %floor GB/s-floor"
    "$1" bench --random d20 --device cpu --threads "$THREADS" --prefill 0 --ctx 128 --batch none --steps 32 --json |
        python3 -c 'import json, sys; j = json.load(sys.stdin); r = j["results"][0]
print(r["tok_s"], r["floor_pct"], j["bandwidth_gbs"])'
}
for r in $(seq "$ROUNDS"); do
    echo "current $(run "$BIN")"
    [ -n "$BASELINE" ] && echo "baseline $(run "$BASELINE")"
done | tee /dev/stderr | python3 -c '
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in sys.stdin:
    name, tok, pct, bw = line.split()
    rows[name].append((float(tok), float(pct), float(bw)))
for name, v in rows.items():
    med = lambda i: statistics.median(x[i] for x in v)
    print(f"{name}: decode {med(0):.2f} tok/s = {med(1):.1f}% of the floor (read {med(2):.1f} GB/s), median of {len(v)}")'
