#!/usr/bin/env bash
# test_deterministic_cli.sh: --deterministic from the command line to the
# backend, on the CPU backend (always batch-invariant, so the flag changes
# nothing there; the GPU side is tests/c/test_cuda_det.c):
#   - forward, generate and bench accept it; --verbose shows the backend
#     created with it ("(deterministic)" on its ready line);
#   - forward's logits are the bytes of the run without the flag, and
#     match transformers' reference (tests/data/forward/tiny_v1, 1e-4);
#   - sampled generations are the same text with and without it, and the
#     same from run to run;
#   - every model command's --help lists it.
. "$(dirname "$0")/lib.sh"
DIR=tests/data/forward/tiny_v1
require_bin

IDS=$(cat "$DIR/expected_ids.txt")
"$BIN" forward -m "$DIR" --device cpu --ids "$IDS" --out "$TMP/plain" 2>"$TMP/err" || bad "forward: $(cat "$TMP/err")"
if "$BIN" forward -m "$DIR" --device cpu --deterministic --verbose --ids "$IDS" --out "$TMP/det" 2>"$TMP/err"; then
    ok
    grep -q "(deterministic) ready" "$TMP/err" && ok || bad "--verbose does not show a deterministic backend: $(cat "$TMP/err")"
    cmp -s "$TMP/plain" "$TMP/det" && ok || bad "forward --deterministic changed the CPU logits"
    python3 - "$TMP/det" "$DIR/expected_logits.f32" <<'PY' && ok || bad "forward --deterministic: logits differ from the reference"
import sys
import numpy as np
a = np.fromfile(sys.argv[1], "<f4")
b = np.fromfile(sys.argv[2], "<f4").reshape(-1, 256)
sys.exit(0 if a.size == b.size and (np.abs(a.reshape(b.shape) - b).max(axis=1) / np.abs(b).max(axis=1)).max() <= 1e-4 else 1)
PY
else
    bad "forward --deterministic: $(cat "$TMP/err")"
fi

GEN=("$BIN" generate --device cpu -p "The capital of France" --max-tokens 24 --temperature 1.0 --seed 7 -n 3)
"${GEN[@]}" >"$TMP/g_plain" 2>"$TMP/err" || bad "generate: $(cat "$TMP/err")"
"${GEN[@]}" --deterministic >"$TMP/g_det1" 2>"$TMP/err" || bad "generate --deterministic: $(cat "$TMP/err")"
"${GEN[@]}" --deterministic >"$TMP/g_det2" 2>"$TMP/err" || bad "generate --deterministic (again): $(cat "$TMP/err")"
[ -s "$TMP/g_det1" ] && cmp -s "$TMP/g_det1" "$TMP/g_det2" && ok || bad "generate --deterministic differs from run to run"
cmp -s "$TMP/g_plain" "$TMP/g_det1" && ok || bad "generate --deterministic differs from the CPU's default"

for cmd in chat generate serve forward bench eval; do
    "$BIN" "$cmd" --help 2>&1 | grep -q -- "--deterministic" && ok || bad "$cmd --help does not list --deterministic"
done

finish test_deterministic_cli
