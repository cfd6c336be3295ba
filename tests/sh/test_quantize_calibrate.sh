#!/usr/bin/env bash
# test_quantize_calibrate.sh: `nanochat quantize --calibrate` (GPTQ
# rounding, docs/quantization.md) end to end on the bundled picochat (CPU):
#   - fp8 calibrated on tests/data/calibration/picochat_mix.txt: the file
#     loads, `info` names the rounding, and eval's bits per byte on the first
#     2048 tokens of the held-out text is within 0.5% of bf16's PyTorch value
#     (tests/data/eval/reference.json), where rounding to nearest lies 1.4%
#     above it (PyTorch's fp8 value, checked to be so);
#   - int8 calibrated the same way stays within 0.5% too;
#   - eval --compare-model: the calibrated file against the float checkpoint,
#     the reference's bits per byte PyTorch's bf16 value (1e-5);
#   - the same run twice writes the same bytes (calibration is deterministic,
#     whatever the threads), and so does one with a memory budget of one
#     layer's statistics (a pass per layer, lm_head in its own);
#   - refusals with a one-line message: a missing or empty calibration text,
#     --calibrate-tokens without --calibrate or out of range, an 8-bit source.
. "$(dirname "$0")/lib.sh"
require_bin
TEXT=tests/data/heldout/devils_dictionary.txt
CALIB=tests/data/calibration/picochat_mix.txt
ref_bpb() { python3 -c "import json; print(json.load(open('tests/data/eval/reference.json'))['results']['$1']['bpb_limit'])"; }
BF16=$(ref_bpb bf16)

for w in fp8 int8; do
    if "$BIN" quantize --weights $w -o "$TMP/$w" --calibrate "$CALIB" --threads 2 >"$TMP/out" 2>"$TMP/err"; then
        grep -q "quantised by GPTQ on [0-9]* tokens" "$TMP/out" && ok || bad "quantize $w report: $(cat "$TMP/out")"
    else
        bad "quantize $w --calibrate failed: $(cat "$TMP/err")"
        continue
    fi
    "$BIN" info -m "$TMP/$w" >"$TMP/info" 2>&1 && grep -q "weights:      $w .*rounded by GPTQ" "$TMP/info" &&
        ok || bad "info of the calibrated $w copy: $(grep weights "$TMP/info")"
    "$BIN" eval -m "$TMP/$w" --device cpu --text "$TEXT" --limit 2048 --json >"$TMP/e_$w.json" 2>"$TMP/err" ||
        { bad "eval $w: $(cat "$TMP/err")"; continue; }
    python3 - "$w" "$TMP/e_$w.json" "$BF16" "$(ref_bpb fp8)" <<'PY' && ok || bad "$w: bits per byte $(cat "$TMP/e_$w.json")"
import json, sys
w, path, bf16, fp8_nearest = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
got = json.load(open(path))["bpb"]
print(f"{w} GPTQ: {got:.5f} bits/byte, bf16 {bf16:.5f} ({100 * (got / bf16 - 1):+.3f}%), "
      f"fp8 to nearest {100 * (fp8_nearest / bf16 - 1):+.3f}%")
assert fp8_nearest > bf16 * 1.005, "the reference no longer shows rounding to nearest's loss"
sys.exit(0 if got <= bf16 * 1.005 else 1)
PY
done
"$BIN" eval -m "$TMP/fp8" --compare-model models/picochat --device cpu --text "$TEXT" --limit 2048 --chats 1 \
    --chat-tokens 16 --json >"$TMP/cmp.json" 2>"$TMP/err" &&
    python3 - "$TMP/cmp.json" "$BF16" <<'PY' && ok || bad "--compare-model: $(cat "$TMP/cmp.json" "$TMP/err")"
import json, sys
j = json.load(open(sys.argv[1]))
c = j["compare"]
assert j["weights"] == "fp8" and c["weights"] == "bf16" and c["model"] == "models/picochat", j
assert abs(c["bpb"] / float(sys.argv[2]) - 1) <= 1e-5, c
assert 0.5 < c["argmax_agreement"] <= 1 and len(c["chats"]) == 1, c
print(f"--compare-model: agreement {c['argmax_agreement']:.4f}")
PY
"$BIN" quantize --weights fp8 -o "$TMP/fp8b" --calibrate "$CALIB" --calibrate-tokens 4096 --threads 1 >/dev/null 2>&1 &&
    "$BIN" quantize --weights fp8 -o "$TMP/fp8c" --calibrate "$CALIB" --calibrate-tokens 4096 --threads 2 >"$TMP/out" 2>&1 &&
    grep -q "GPTQ on 4096 tokens" "$TMP/out" && cmp -s "$TMP/fp8b/model.safetensors" "$TMP/fp8c/model.safetensors" &&
    ok || bad "calibrated quantisation differs between runs (1 and 2 threads): $(cat "$TMP/out")"
"$BIN" quantize --weights fp8 -o "$TMP/fp8d" --calibrate "$CALIB" --calibrate-tokens 4096 --calibrate-memory 1 \
    >/dev/null 2>"$TMP/err" && [ "$(grep -c "calibration pass" "$TMP/err")" -eq 7 ] &&
    cmp -s "$TMP/fp8b/model.safetensors" "$TMP/fp8d/model.safetensors" &&
    ok || bad "a pass per layer gives other weights than one pass: $(cat "$TMP/err")"

: >"$TMP/empty.txt"
expect_error "missing text" "$TMP/none.txt" "$BIN" quantize --weights fp8 -o "$TMP/x1" --calibrate "$TMP/none.txt"
expect_error "empty text" "needs a few thousand" "$BIN" quantize --weights fp8 -o "$TMP/x2" --calibrate "$TMP/empty.txt"
expect_error "tokens alone" "--calibrate-tokens needs --calibrate" "$BIN" quantize --weights fp8 -o "$TMP/x3" --calibrate-tokens 100
expect_error "memory alone" "--calibrate-memory needs --calibrate" "$BIN" quantize --weights fp8 -o "$TMP/x3" --calibrate-memory 100
expect_error "tokens range" "--calibrate-tokens expects an integer" "$BIN" quantize --weights fp8 -o "$TMP/x4" --calibrate "$CALIB" --calibrate-tokens 1
expect_error "two references" "mutually exclusive" "$BIN" eval --text "$TEXT" --compare bf16 --compare-model models/picochat
expect_error "8-bit source" "already holds fp8" "$BIN" quantize -m "$TMP/fp8" --weights int8 -o "$TMP/x5" --calibrate "$CALIB"
[ ! -e "$TMP/x1/model.safetensors" ] && [ ! -e "$TMP/x2/model.safetensors" ] && ok || bad "a refused run left a model file"

finish test_quantize_calibrate
