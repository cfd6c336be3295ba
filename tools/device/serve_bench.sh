#!/usr/bin/env bash
# tools/device/serve_bench.sh: the server benchmark (issue 5) in one device
# call, ~2 min. Starts `nanochat serve --random d34 --device cuda`, waits
# until /health says ready, runs tools/loadgen.py with CLIENTS (default 64)
# concurrent streaming clients (512-token prompts, 256 generated tokens
# each) and with one client, then `nanochat bench`'s batch-1 decode at the
# same contexts for comparison. The engine's step and forward seconds from
# /metrics show how much of the time the GPU was busy.
#   usage: [SERVE_ARGS="--max-batch-tokens 1024"] [MODEL_ARGS=...] [BIN=nanochat_base]
#          bash tools/device/serve_bench.sh
. "$(dirname "$0")/common.sh"
BIN=${BIN:-nanochat}
PORT=${PORT:-8123}
URL=http://127.0.0.1:$PORT
MODEL_ARGS=${MODEL_ARGS:---random d34 --device cuda}
CLIENTS=${CLIENTS:-64}
get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1" 2>/dev/null; }

$BIN serve $MODEL_ARGS --port "$PORT" --max-batch 64 --kv-blocks 1100 ${SERVE_ARGS:-} >"$OUT/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; pack_logs' EXIT
ready=0
for _ in $(seq 1 120); do
    get "$URL/health" | grep -q '"ready": *true' && { ready=1; break; }
    kill -0 $server 2>/dev/null || break
    sleep 1
done
if [ $ready = 0 ]; then
    echo "the server did not get ready:"
    tail -n 20 "$OUT/serve.log"
    exit 1
fi
load="tools/loadgen.py --url $URL --prompt-tokens 512 --max-tokens 256 --warmup"
step "load_${CLIENTS}_clients" 150 python3 $load --clients "$CLIENTS"
step load_1_client 90 python3 $load --clients 1
get "$URL/metrics" | grep -E "^nanochat_engine_(step|forward)_seconds_total" >"$OUT/engine_time.txt"
kill $server
wait $server 2>/dev/null
step bench_batch1 60 $BIN bench $MODEL_ARGS --prefill 0 --ctx 512,768 --batch none

echo "==== $CLIENTS clients"; tail -n 12 "$OUT/load_${CLIENTS}_clients.log"
echo "==== 1 client"; tail -n 12 "$OUT/load_1_client.log"
echo "==== bench batch-1"; grep -E "^decode" "$OUT/bench_batch1.log"
echo "==== engine time (both load runs): step vs forward seconds"; cat "$OUT/engine_time.txt"
summary
