#!/usr/bin/env bash
# tools/device/release_check.sh: the whole GPU verification of a tree in one
# device call, under BUDGET (default 570 s): test_cuda_backend (as built and
# with CUDA graphs off), compute-sanitizer memcheck on the quick test,
# picochat end to end on the GPU, `nanochat bench` on d34 (its default
# tests), the server load test (serve_bench.sh), then the
# PyTorch baselines (tools/bench_pytorch.py) in the time left: their compiled
# modes get what the checks leave (NO_PYTORCH=1 skips them). Ends with
# nanochat against the best PyTorch mode per test, and the summary.
#   usage: [NO_PYTORCH=1] [BUDGET=570] bash tools/device/release_check.sh
. "$(dirname "$0")/common.sh"
step test_cuda_backend 150 test_cuda_backend
step test_cuda_backend_NC_CUDA_GRAPHS=0 120 env NC_CUDA_GRAPHS=0 test_cuda_backend
step sanitizer 240 env NC_CUDA_TEST_QUICK=1 \
    compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 test_cuda_backend
step picochat_e2e 200 python3 tests/py/test_picochat_e2e.py
step bench 150 nanochat bench --random d34 --device cuda --json
step serve 240 env OUT="$OUT/serve" bash tools/device/serve_bench.sh
pytorch=()
if [ -z "${NO_PYTORCH:-}" ]; then
    # bench_pytorch.py may finish one test past its budget: 40 s of margin.
    budget=$(($(left) - 45))
    if [ $budget -ge 30 ]; then
        step pytorch $((budget + 40)) python3 tools/bench_pytorch.py --model d34 --ctx 128,1024 --budget $budget \
            --json-out "$OUT/pytorch.json"
        pytorch=(--pytorch "$OUT/pytorch.json")
    else
        note "pytorch: skipped, the checks left $(left) s of BUDGET"
    fi
fi

echo "==== server"
sed -n '/^==== [0-9]* clients/,/^==== summary/p' "$OUT/serve.log" | grep -v '^==== summary'
echo "==== nanochat bench vs PyTorch (d34)"
python3 tools/device/bench_table.py "${pytorch[@]}" --run nanochat "$OUT/bench.log"
summary
