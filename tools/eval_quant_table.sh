#!/usr/bin/env bash
# eval_quant_table.sh: the quality table of bench/RESULTS.md ("8-bit weights:
# quality"): `nanochat eval --compare bf16` of one model on one text for every
# 8-bit mode, as markdown rows (bits per byte, change against bf16, argmax
# agreement, first divergence of 5 greedy chats; "=" where a chat is
# identical for its 64 tokens).
#
#   [BIN=build/nanochat] [MODEL=models/picochat] [TEXT=tests/data/heldout/devils_dictionary.txt] \
#     [DEVICE=cpu] bash tools/eval_quant_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/nanochat}
MODEL=${MODEL:-models/picochat}
TEXT=${TEXT:-tests/data/heldout/devils_dictionary.txt}
DEVICE=${DEVICE:-cpu}
MODES=(
    "bf16||--weights bf16"
    "int8, weight-only (avx2)|NC_CPU_KERNELS=avx2|--weights int8"
    "int8, q8 activations (default kernels)||--weights int8"
    "int8, lm_head bf16 (avx2)|NC_CPU_KERNELS=avx2|--weights int8 --lm-head-bf16"
    "fp8||--weights fp8"
    "fp8, lm_head bf16||--weights fp8 --lm-head-bf16"
    "fp8 KV cache||--kv-cache fp8"
    "int8 (avx2) + fp8 KV cache|NC_CPU_KERNELS=avx2|--weights int8 --kv-cache fp8"
    "int8 (default kernels) + fp8 KV cache||--weights int8 --kv-cache fp8"
)
echo "| mode | bits per byte | vs bf16 | argmax agreement | first divergence, 5 greedy chats |"
echo "|---|---:|---:|---:|---|"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for m in "${MODES[@]}"; do
    IFS='|' read -r name env args <<<"$m"
    # shellcheck disable=SC2086
    env $env "$BIN" eval -m "$MODEL" --device "$DEVICE" --text "$TEXT" $args --compare bf16 --chats 5 --json >"$OUT"
    python3 - "$name" "$OUT" <<'PY'
import json, sys
j = json.load(open(sys.argv[2]))
c = j["compare"]
div = ", ".join("=" if ch["first_divergence"] is None else str(ch["first_divergence"]) for ch in c["chats"])
bpb, change, agree = j["bpb"], c["bpb_change_pct"], 100 * c["argmax_agreement"]
print(f"| {sys.argv[1]} | {bpb:.5f} | {change:+.3f}% | {agree:.2f}% | {div} |")
PY
done
