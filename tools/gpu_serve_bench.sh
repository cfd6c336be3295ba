#!/usr/bin/env bash
# tools/gpu_serve_bench.sh: issue 5's server benchmark in one device call.
# Starts `nanochat serve --random d34 --device cuda`, waits until /health says
# ready, then runs tools/loadgen.py with 64 concurrent streaming clients
# (512-token prompts, 256 generated tokens each) and with 1 client, and
# `nanochat bench`'s batch-1 decode at the same context for comparison.
# Uses the prebuilt binaries in .gpu-bin when present (the device image lacks
# cjson, pcre2, microhttpd and libedit), else build/.
#   usage: [SERVE_ARGS="--max-batch-tokens 1024"] [BIN=path/to/nanochat] bash tools/gpu_serve_bench.sh
#   (logs and a summary under $OUT)
set -u
OUT=${OUT:-/tmp/nc-serve-out}
mkdir -p "$OUT"
[ -d .gpu-bin/libs ] && export LD_LIBRARY_PATH="$PWD/.gpu-bin/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -z "${BIN:-}" ]; then
    BIN=build/nanochat
    [ -x .gpu-bin/nanochat ] && BIN=.gpu-bin/nanochat
fi
PORT=${PORT:-8123}
URL=http://127.0.0.1:$PORT
get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1" 2>/dev/null; }
MODEL_ARGS=${MODEL_ARGS:---random d34 --device cuda}
CLIENTS=${CLIENTS:-64}
$BIN serve $MODEL_ARGS --port "$PORT" --max-batch 64 --kv-blocks 1100 ${SERVE_ARGS:-} \
    >"$OUT/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 120); do
    get "$URL/health" | grep -q '"ready": *true' && break
    kill -0 $server 2>/dev/null || { echo "server died"; tail -20 "$OUT/serve.log"; exit 1; }
    sleep 1
done
get "$URL/health"
python3 tools/loadgen.py --url "$URL" --clients "$CLIENTS" --prompt-tokens 512 --max-tokens 256 --warmup \
    >"$OUT/load64.txt" 2>&1
python3 tools/loadgen.py --url "$URL" --clients 1 --prompt-tokens 512 --max-tokens 256 --warmup \
    >"$OUT/load1.txt" 2>&1
get "$URL/metrics" >"$OUT/metrics.txt"
kill $server; wait $server 2>/dev/null
trap - EXIT
$BIN bench $MODEL_ARGS --prefill 0 --ctx 512,768 --batch none >"$OUT/bench_b1.txt" 2>&1
echo "==== $CLIENTS clients"; tail -n 12 "$OUT/load64.txt"
echo "==== 1 client"; tail -n 12 "$OUT/load1.txt"
echo "==== bench batch-1"; grep -E "^decode" "$OUT/bench_b1.txt"
echo "==== engine time (both load runs): step vs forward seconds"
grep -E "^nanochat_engine_(step|forward)_seconds_total" "$OUT/metrics.txt"
