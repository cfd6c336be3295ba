#!/usr/bin/env bash
# tools/device/python_bench.sh: the Python package (python/nanochat_c, issue
# 19) on a GPU machine, under BUDGET (default 570 s). Needs a bundle made
# after the package landed (`make gpu-bundle` puts lib/libnanochat.so in it)
# and torch on the machine.
#   1. tools/bench_generate_many.py --engine nanochat_c: generate_many of 256
#      prompts x 4 samples x 128 new tokens, d34 shapes (random weights),
#      max_batch 256 and 1024, then 1024 with logprobs=True;
#   2. the same --engine torch: nanochat's Engine written again in PyTorch
#      (tools/nanochat_engine.py), generate_batch prompt by prompt, bf16;
#   3. tests/py/test_python_example.py, on the CPU with torch present: the
#      example's evaluation loop through nanochat_c and through the PyTorch
#      Engine give the same greedy records (the part CI cannot run);
#   4. the example on the GPU: 200 generated problems in one generate_many.
# Ends with the table of tokens per second and the ratio to the PyTorch loop
# (issue 19's target: >= 10x), also kept in $OUT/table.md.
#   usage: [GPU_BUNDLE=DIR] [BUDGET=570] bash tools/device/python_bench.sh
. "$(dirname "$0")/common.sh"
export NANOCHAT_LIB=$GPU_BUNDLE/lib/libnanochat.so
if [ ! -f "$NANOCHAT_LIB" ]; then
    echo "no $NANOCHAT_LIB: this bundle predates libnanochat.so; make gpu-bundle again" >&2
    exit 2
fi
step many_nanochat_c 240 python3 tools/bench_generate_many.py --engine nanochat_c --json-out "$OUT/many_nanochat_c.json"
step many_torch 180 python3 tools/bench_generate_many.py --engine torch --json-out "$OUT/many_torch.json"
step example_vs_torch 150 python3 tests/py/test_python_example.py
step example_gpu 90 python3 python/examples/arithmetic_eval.py --device cuda --batched --problems 200 --max-batch 256
echo "==== generate_many vs nanochat's Engine prompt by prompt"
python3 tools/bench_generate_many.py --report "$OUT/many_nanochat_c.json" "$OUT/many_torch.json" | tee "$OUT/table.md"
summary
