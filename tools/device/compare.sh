#!/usr/bin/env bash
# tools/device/compare.sh: nanochat against the strongest PyTorch on the same
# card, under BUDGET (default 570 s). For each model of MODELS (default d34;
# "d34 d20" for both): `nanochat bench` (prefill 2048, batch-1 decode at 128
# and 1024 context, batches of 8, 32, 64 and 128 at 512), then
# tools/bench_pytorch.py (eager, CUDA graph, torch.compile and max-autotune,
# each captured in a CUDA graph; decode at 4096 too) with an equal share of
# the time left, then `nanochat bench` again with decode at 4096 added (a
# run of its own, so a failure there costs no other number). Ends with one
# table per model: nanochat's better run, the best PyTorch mode, the ratio.
#   usage: [MODELS="d34 d20"] [BUDGET=570] bash tools/device/compare.sh
. "$(dirname "$0")/common.sh"
read -r -a models <<<"${MODELS:-d34}"
n=${#models[@]}
for i in "${!models[@]}"; do
    m=${models[$i]}
    step "bench_${m}_1" 150 nanochat bench --random "$m" --device cuda --json
    # Keep 90 s for each model's second bench and for each later model's first.
    share=$((($(left) - 90 * (2 * (n - i) - 1)) / (n - i)))
    if [ $share -ge 30 ]; then
        step "pytorch_$m" $((share + 40)) python3 tools/bench_pytorch.py --model "$m" --budget "$share" \
            --json-out "$OUT/pytorch_$m.json"
    else
        note "pytorch_$m: skipped, $(left) s of BUDGET left"
    fi
    step "bench_${m}_2" 150 nanochat bench --random "$m" --device cuda --ctx 128,1024,4096 --json
done
for m in "${models[@]}"; do
    echo "==== $m: nanochat bench (better of two runs) vs the best PyTorch mode"
    python3 tools/device/bench_table.py --pytorch "$OUT/pytorch_$m.json" \
        --run nanochat "$OUT/bench_${m}_1.log" --run nanochat "$OUT/bench_${m}_2.log"
done
summary
