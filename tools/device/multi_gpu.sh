#!/usr/bin/env bash
# tools/device/multi_gpu.sh: issue 17's runs on a machine with two or more
# GPUs (nvidia-h100-x2 or nvidia-h200-x2), in one device call of about 8
# minutes (BUDGET, default 570 s). d34-shaped random weights throughout.
#
#   1. test_cuda_tp: tensor-parallel logits against the single-GPU path
#      (2-layer d34-width and 4,512,4 models, prefill, decode through the
#      captured graphs, 5 decode rows, a fork, greedy device sampling; the
#      d34-width one again with int8 weights and with fp8 weights + the fp8
#      KV cache; when it fails, again with NC_CUDA_GRAPHS=0)
#   2. batch-1 decode at 1024 context, `nanochat bench`: cuda:0 alone, then
#      --tensor-parallel 2 (target: >= 1.7x), then the same with every
#      all-reduce through NCCL (NC_TP_ALLREDUCE=nccl) instead of the one-shot
#      kernel over peer memory
#   3. data parallel: 128 streaming clients (512-token prompts, 256 tokens
#      each, tools/loadgen.py) against `serve --device cuda:0`, then
#      `serve --devices cuda:0,cuda:1`, both --max-batch $MAX_BATCH (target:
#      >= 1.9x the aggregate tok/s, p99 inter-token latency <= 25 ms); then
#      the single GPU again at --max-batch 2*MAX_BATCH, the fairer baseline
#      when one card could batch all 128
#   4. a failed engine: `--devices cuda:0,cuda:1` with NC_DEBUG_FAIL_ENGINE=1:400
#      (engine 1's forward passes fail from its 400th, as a dead GPU's
#      would) under 32 clients: the requests on engine 1 end with an error
#      event, the rest complete, /health shows engine 1 failed, and a second
#      round of 32 clients completes on engine 0 alone
#   5. `serve --tensor-parallel 2`: 1 and 16 clients through the server
# Ends with the ratios, each target's verdict and the summary.
#
# NCCL is loaded at run time: the machines' image has it in PyTorch's
# nvidia-nccl package, which this script puts on the library path when the
# system has no libnccl.so.2. NCCL_NVLS_ENABLE=0 stays set (the machines
# must not use NVLink multicast).
#
# The bundle it needs (nanochat and test_cuda_tp), built on a machine with
# nvcc and NCCL's nccl.h (without it tensor parallelism is left out:
# test_cuda_tp skips and the TP steps fail, "not compiled into this
# build"; `grep -c ncclCommInitRankConfig build/gpu-bundle/bin/nanochat`
# prints 1 when it is in), Hopper code only:
#   make -j2 gpu-bundle BUILD=build/sm90a GPU_BUNDLE=build/gpu-bundle GPU_TESTS=test_cuda_tp \
#       CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a"
# About 4 minutes from clean on the 2-core build VM (3m48s), 43 MB; then
# copy the repository with build/gpu-bundle inside it to the GPU machine.
# The run itself takes about 8 minutes (BUDGET, default 570 s), logs and
# results.txt under $OUT.
#   usage: [MAX_BATCH=64] [CLIENTS=128] [MODEL_ARGS="--random d34"] bash tools/device/multi_gpu.sh
. "$(dirname "$0")/common.sh"
export NCCL_NVLS_ENABLE=0
MAX_BATCH=${MAX_BATCH:-64}
CLIENTS=${CLIENTS:-128}
MODEL_ARGS=${MODEL_ARGS:---random d34}
PORT=${PORT:-8131}
URL=http://127.0.0.1:$PORT

if ! ldconfig -p 2>/dev/null | grep -q 'libnccl\.so\.2'; then
    nccl_lib=$(python3 -c 'import importlib.util, os; s = importlib.util.find_spec("nvidia.nccl")
print(os.path.join(list(s.submodule_search_locations)[0], "lib"))' 2>/dev/null)
    [ -f "$nccl_lib/libnccl.so.2" ] || nccl_lib=$(dirname "$(find /usr /opt -name libnccl.so.2 2>/dev/null | head -n 1)")
    export LD_LIBRARY_PATH="$nccl_lib:$LD_LIBRARY_PATH"
fi
gpus=$(nvidia-smi -L | wc -l)
echo "GPUs: $gpus; NCCL from: ${nccl_lib:-the system}" | tee -a "$OUT/machine.txt"
[ "$gpus" -ge 2 ] || { echo "multi_gpu.sh needs two GPUs"; exit 2; }

get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1" 2>/dev/null; }

server=
# start_server NAME ARGS...: `nanochat serve` in the background, until /health says ready.
start_server() {
    local name=$1
    shift
    nanochat serve $MODEL_ARGS --port "$PORT" "$@" >"$OUT/serve_$name.log" 2>&1 &
    server=$!
    for _ in $(seq 1 240); do
        get "$URL/health" | grep -q '"ready": *true' && return 0
        kill -0 $server 2>/dev/null || break
        sleep 1
    done
    note "$(printf '%-36s did not get ready: %s' "serve_$name" "$(tail -n 1 "$OUT/serve_$name.log" | cut -c1-80)")"
    stop_server
    return 1
}
stop_server() {
    [ -n "$server" ] || return 0
    kill $server 2>/dev/null
    wait $server 2>/dev/null
    server=
}
trap 'stop_server; pack_logs' EXIT
load() { # NAME CLIENTS: loadgen's JSON in $OUT/NAME.json
    step "$1" 180 python3 tools/loadgen.py --url "$URL" --clients "$2" --prompt-tokens 512 --max-tokens 256 \
        --warmup --json
    cp "$OUT/$1.log" "$OUT/$1.json"
}

# 1. logits (when they fail, again without CUDA graphs: are the captured all-reduces the cause?)
step test_cuda_tp 200 test_cuda_tp || step test_cuda_tp_no_graphs 200 env NC_CUDA_GRAPHS=0 test_cuda_tp

# 2. batch-1 decode, one GPU and two
bench="--prefill 0 --ctx 1024 --batch none --json"
step bench_1gpu 120 nanochat bench $MODEL_ARGS --device cuda:0 $bench
step bench_tp2 120 nanochat bench $MODEL_ARGS --device cuda:0 --tensor-parallel 2 $bench
step bench_tp2_nccl 120 env NC_TP_ALLREDUCE=nccl nanochat bench $MODEL_ARGS --device cuda:0 --tensor-parallel 2 $bench

# 3. data parallel under load
if start_server 1gpu --device cuda:0 --max-batch "$MAX_BATCH"; then
    load load_1gpu "$CLIENTS"
    stop_server
fi
if start_server dp2 --devices cuda:0,cuda:1 --max-batch "$MAX_BATCH"; then
    load load_dp2 "$CLIENTS"
    get "$URL/metrics" | grep -E '^nanochat_(generation_tokens|engine_step_seconds|engine_forward_seconds)_total' \
        >"$OUT/dp2_engines.txt"
    stop_server
fi
if start_server 1gpu_wide --device cuda:0 --max-batch $((2 * MAX_BATCH)); then
    load load_1gpu_wide "$CLIENTS"
    stop_server
fi

# 4. a failed engine
export NC_DEBUG_FAIL_ENGINE=1:400 # read by the server as it starts
start_server failed --devices cuda:0,cuda:1 --max-batch "$MAX_BATCH"
started=$?
unset NC_DEBUG_FAIL_ENGINE
if [ $started = 0 ]; then
    load load_failing 32
    get "$URL/health" >"$OUT/failed_health.json"
    load load_after_failure 32
    stop_server
fi

# 5. the server on a tensor-parallel engine
if start_server tp2 --tensor-parallel 2 --max-batch "$MAX_BATCH"; then
    load load_tp2_1 1
    load load_tp2_16 16
    stop_server
fi

echo "==== results"
python3 - "$OUT" <<'EOF' | tee "$OUT/results.txt"
import json, os, sys
out = sys.argv[1]
def load(name):
    """The first JSON object in the file (loadgen prints its errors after it)."""
    try:
        with open(os.path.join(out, name)) as f:
            text = f.read()
        return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]
    except (OSError, ValueError):
        return None
def decode(name):
    b = load(name + ".log")
    return next((r["tok_s"] for r in (b or {}).get("results", []) if r.get("test", "").startswith("decode")), None)
def verdict(ok):
    return "PASS" if ok else "FAIL"
one, tp, tp_nccl = decode("bench_1gpu"), decode("bench_tp2"), decode("bench_tp2_nccl")
if one and tp:
    print(f"tensor parallel 2, batch-1 decode @1024: {one:.1f} -> {tp:.1f} tok/s = {tp / one:.2f}x "
          f"(target >= 1.7x: {verdict(tp / one >= 1.7)})")
if one and tp_nccl:
    print(f"  every all-reduce through NCCL: {tp_nccl:.1f} tok/s = {tp_nccl / one:.2f}x")
a, b, w = load("load_1gpu.json"), load("load_dp2.json"), load("load_1gpu_wide.json")
if a and b:
    r = b["throughput_tok_s"] / a["throughput_tok_s"]
    p99 = 1e3 * b["itl_s"]["p99"]
    print(f"data parallel, {b['clients']} clients: {a['throughput_tok_s']:.0f} -> {b['throughput_tok_s']:.0f} tok/s "
          f"= {r:.2f}x (target >= 1.9x: {verdict(r >= 1.9)}); p99 ITL {p99:.1f} ms (target <= 25: "
          f"{verdict(p99 <= 25)}); errors {a['errors']}, {b['errors']}")
    if w:
        print(f"  against one GPU at twice the batch: {w['throughput_tok_s']:.0f} tok/s "
              f"(p99 ITL {1e3 * w['itl_s']['p99']:.1f} ms): {b['throughput_tok_s'] / w['throughput_tok_s']:.2f}x")
f1, f2, h = load("load_failing.json"), load("load_after_failure.json"), load("failed_health.json")
if f1 and f2 and h:
    e1 = h["engines"][1]
    ok = f1["ok"] > 0 and f1["errors"] > 0 and f2["errors"] == 0 and e1["state"] == "failed" and \
        h["engines"][0]["state"] == "ready"
    print(f"failed engine: {f1['ok']} ok + {f1['errors']} failed, then {f2['ok']} ok + {f2['errors']} failed; "
          f"engine 1 {e1['state']} ({(e1.get('error') or '')[:90]}): {verdict(ok)}")
t1, t16 = load("load_tp2_1.json"), load("load_tp2_16.json")
if t1 and t16:
    print(f"serve --tensor-parallel 2: 1 client {t1['decode_tok_s_per_client']['mean']:.1f} tok/s, 16 clients "
          f"{t16['throughput_tok_s']:.0f} tok/s; errors {t1['errors']}, {t16['errors']}")
EOF
grep -E "^(device|  worst|test_cuda_tp)" "$OUT/test_cuda_tp.log"
summary
