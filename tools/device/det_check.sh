#!/usr/bin/env bash
# tools/device/det_check.sh: --deterministic on the GPU (docs/performance.md,
# Batch invariance) in one device call, under BUDGET (default 420 s):
#   1. test_cuda_det: a target sequence's logits bit for bit alone, prefilled
#      in chunks of 1 / 64 / 2048, inside batches of 1..128 random other
#      rows, after a cached prefix, repeated, and its device-sampled token
#      alone and in a batch of 64; the deterministic logits against the CPU
#      backend; and that without the flag the comparison does see
#      differences;
#   2. the server with --deterministic: one seeded sampled request alone,
#      the same request while 64 other clients stream (arriving at their own
#      times), and again with its prompt cached: the same text three times;
#   3. the cost: the 64-client server test (tools/serve_bench.sh's load:
#      512-token prompts, 256 tokens each; step 2 runs inside the
#      deterministic one) and `nanochat bench --random d34` (prefill 2048,
#      batch-1 decode at 512, batches of 64 and 128), each without and with
#      --deterministic, side by side.
#   4. in the time left, test_cuda_backend (the default kernels this change
#      refactored).
# Ends with the bench table (ratio of deterministic to default), the server
# throughput of both and the summary.
# The bundle: `make -j2 gpu-bundle GPU_TESTS="test_cuda_det test_cuda_backend"`
# (or CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a" BUILD=build/sm90a for
# Hopper only).
#   usage: [BUDGET=420] bash tools/device/det_check.sh
. "$(dirname "$0")/common.sh"
MODEL="--random d34 --device cuda"
BENCH_ARGS="--prefill 2048 --ctx 512 --batch 64,128 --steps 32 --batch-steps 8"
PORT=${PORT:-8123}
URL=http://127.0.0.1:$PORT
get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1" 2>/dev/null; }

step test_cuda_det 150 test_cuda_det

# One seeded sampled request's text (completions, temperature 1, seed 5).
seeded() {
    python3 - "$URL" <<'EOF'
import json, sys, urllib.request
body = {"prompt": "Once upon a time in a land far away, " * 40, "max_tokens": 48, "temperature": 1.0,
        "top_k": 50, "seed": 5}
req = urllib.request.Request(sys.argv[1] + "/v1/completions", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
print(json.dumps(json.loads(urllib.request.urlopen(req, timeout=120).read())["choices"][0]["text"]))
EOF
}

# The 64-client load test against a server with the given flags; with
# --deterministic also the seeded request alone, under load and cached.
serve_run() { # mode, flags...
    local mode=$1
    shift
    nanochat serve $MODEL --port "$PORT" --max-batch 64 --kv-blocks 1100 "$@" >"$OUT/serve_$mode.log" 2>&1 &
    local server=$! ready=0
    for _ in $(seq 1 120); do
        get "$URL/health" | grep -q '"ready": *true' && { ready=1; break; }
        kill -0 $server 2>/dev/null || break
        sleep 1
    done
    if [ $ready = 1 ]; then
        local load="tools/loadgen.py --url $URL --prompt-tokens 512 --max-tokens 256 --warmup --clients 64"
        if [ "$mode" = deterministic ]; then
            # alone, then arriving while the 64 clients stream (one request more in the timed run:
            # 48 tokens against 16k), then with its prompt cached
            seeded >"$OUT/seeded_alone.txt"
            (sleep 8; seeded >"$OUT/seeded_loaded.txt") &
            local seededpid=$!
            step "load_64_clients_$mode" 100 python3 $load
            wait $seededpid
            seeded >"$OUT/seeded_cached.txt"
            if [ -s "$OUT/seeded_alone.txt" ] && cmp -s "$OUT/seeded_alone.txt" "$OUT/seeded_loaded.txt" &&
                cmp -s "$OUT/seeded_alone.txt" "$OUT/seeded_cached.txt"; then
                note "seeded request: the same text alone, among 64 clients and with its prompt cached"
            else
                note "SEEDED REQUEST DIFFERS: alone / under load / cached: $(cat "$OUT"/seeded_*.txt | cut -c1-60 | tr '\n' '|')"
            fi
        else
            step "load_64_clients_$mode" 100 python3 $load
        fi
    else
        note "server ($mode) did not get ready: $(tail -n 1 "$OUT/serve_$mode.log")"
    fi
    kill $server 2>/dev/null
    wait $server 2>/dev/null
}
serve_run default
serve_run deterministic --deterministic

runs=()
for mode in default deterministic; do
    flag=$([ $mode = deterministic ] && echo --deterministic)
    step "bench_$mode" 75 nanochat bench $MODEL $flag --json $BENCH_ARGS
    runs+=(--run "$mode" "$OUT/bench_$mode.log")
done
# the default kernels this change touched (the decode attention's shared helpers, the mma.sync
# GEMM's bf16 variant beside the 8-bit ones), in the time left
step test_cuda_backend 150 test_cuda_backend

echo "==== test_cuda_det"
grep -E "checked|relative|differ|FAIL|skipped|checks" "$OUT/test_cuda_det.log" 2>/dev/null | head -30
echo "==== bench ($MODEL $BENCH_ARGS): deterministic against default"
python3 tools/device/bench_table.py "${runs[@]}"
echo "==== server, 64 streaming clients (512-token prompts, 256 tokens each)"
for mode in default deterministic; do
    printf '%-14s %s | %s\n' "$mode" \
        "$(grep -m1 "throughput" "$OUT/load_64_clients_$mode.log" 2>/dev/null | sed 's/^ *//')" \
        "$(grep -m1 "inter-token" "$OUT/load_64_clients_$mode.log" 2>/dev/null | sed 's/^ *//')"
done
python3 - "$OUT/load_64_clients_default.log" "$OUT/load_64_clients_deterministic.log" <<'EOF'
import re, sys
def tok_s(path):
    try:
        m = re.search(r"throughput\s+([\d.]+) tok/s", open(path).read())
        return float(m.group(1)) if m else None
    except OSError:
        return None
a, b = tok_s(sys.argv[1]), tok_s(sys.argv[2])
if a and b:
    print(f"server cost of --deterministic: {100 * (1 - b / a):.1f}% of throughput ({b:.0f} vs {a:.0f} tok/s)")
EOF
summary
