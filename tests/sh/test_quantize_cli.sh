#!/usr/bin/env bash
# test_quantize_cli.sh: `nanochat quantize`, `--weights`, `--kv-cache` and
# `nanochat eval` end to end on the bundled picochat (CPU):
#   - quantize -> load round trip: the logits of `-m OUTDIR` are bit-identical
#     to quantising at load (--weights int8 / fp8, with and without
#     --lm-head-bf16), and `info` shows the format;
#   - refusals with a one-line message: requantising, --weights bf16 on an
#     8-bit file, bad flag values, and damaged files (a scale missing, a scale
#     of the wrong shape, an unknown format in the metadata) naming the tensor
#     or the format;
#   - eval's bits per byte on the first 2048 tokens of the held-out text
#     against PyTorch (tests/data/eval/reference.json, tools/make_quant_fixtures.py):
#     bf16, fp8 and int8 with the weight-only kernels within 1e-5 (relative),
#     int8 with the VNNI kernels (q8 activations) within 0.5%; --compare's
#     report; eval's own bad input.
. "$(dirname "$0")/lib.sh"
require_bin
IDS="4087 4088 1234 77 901 3000 12 4089 4090 55 600 2048 17 18 19 20 21 3999"
TEXT=tests/data/heldout/devils_dictionary.txt

# ---- quantize -> load round trip ----
for w in int8 fp8; do
    if "$BIN" quantize --weights $w -o "$TMP/$w" >"$TMP/out" 2>"$TMP/err"; then
        ok
        for f in model.safetensors meta.json tokenizer.pkl; do
            [ -f "$TMP/$w/$f" ] && ok || bad "quantize $w: no $f"
        done
    else
        bad "quantize $w failed: $(cat "$TMP/err")"
        continue
    fi
    "$BIN" info -m "$TMP/$w" >"$TMP/info" 2>&1 && grep -q "weights:      $w with one fp32 scale per row (layers; lm_head $w)" "$TMP/info" &&
        ok || bad "info of the $w copy: $(grep weights "$TMP/info")"
    "$BIN" forward -m "$TMP/$w" --device cpu --ids "$IDS" --out "$TMP/file.f32" 2>"$TMP/err" &&
        "$BIN" forward --weights $w --device cpu --ids "$IDS" --out "$TMP/load.f32" 2>>"$TMP/err" &&
        cmp -s "$TMP/file.f32" "$TMP/load.f32" && ok || bad "$w: file and quantise-at-load logits differ $(cat "$TMP/err")"
done
"$BIN" quantize --weights int8 --lm-head-bf16 -o "$TMP/int8h" >/dev/null 2>"$TMP/err" &&
    "$BIN" forward -m "$TMP/int8h" --device cpu --ids "$IDS" --out "$TMP/file.f32" 2>>"$TMP/err" &&
    "$BIN" forward --weights int8 --lm-head-bf16 --device cpu --ids "$IDS" --out "$TMP/load.f32" 2>>"$TMP/err" &&
    cmp -s "$TMP/file.f32" "$TMP/load.f32" && ok || bad "--lm-head-bf16 round trip: $(cat "$TMP/err")"
"$BIN" info -m "$TMP/int8h" --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
sys.exit(0 if (j["weight_format"], j["lm_head_format"]) == ("int8", "bf16") else 1)' && ok || bad "info --json formats"

expect_error "requantise" "already holds int8" "$BIN" quantize -m "$TMP/int8" --weights fp8 -o "$TMP/x"
expect_error "existing output" "already exists" "$BIN" quantize --weights int8 -o "$TMP/int8"
expect_error "quantize without -o" "-o OUTDIR" "$BIN" quantize --weights int8
expect_error "quantize bf16" "int8 or fp8" "$BIN" quantize --weights bf16 -o "$TMP/y"
expect_error "bf16 of an int8 file" "stores int8 weights" "$BIN" forward -m "$TMP/int8" --weights bf16 --ids 1 --out "$TMP/o"
expect_error "fp8 of an int8 file" "stores int8 weights" "$BIN" forward -m "$TMP/int8" --weights fp8 --ids 1 --out "$TMP/o"
expect_error "--weights int4" "unknown weight format 'int4'" "$BIN" forward --weights int4 --ids 1 --out "$TMP/o"
expect_error "--kv-cache fp16" "--kv-cache must be bf16 or fp8" "$BIN" forward --kv-cache fp16 --ids 1 --out "$TMP/o"
expect_error "--lm-head-bf16 alone" "--lm-head-bf16 applies with --weights" "$BIN" forward --lm-head-bf16 --ids 1 --out "$TMP/o"

# damaged copies of the int8 file: header edits (the data area stays)
damage() { # dir how
    mkdir -p "$1" && cp "$TMP/int8/meta.json" "$TMP/int8/tokenizer.pkl" "$1/"
    python3 - "$TMP/int8/model.safetensors" "$1/model.safetensors" "$2" <<'EOF'
import json, struct, sys
src, dst, how = sys.argv[1:]
data = open(src, "rb").read()
n = struct.unpack("<Q", data[:8])[0]
h = json.loads(data[8:8 + n])
if how == "no_scale":
    del h["transformer.h.2.mlp.c_fc.weight_scale"]
elif how == "scale_shape":
    h["transformer.h.1.attn.c_v.weight_scale"]["shape"] = [128, 2]
    h["transformer.h.1.attn.c_v.weight_scale"]["data_offsets"][1] = h["transformer.h.1.attn.c_v.weight_scale"]["data_offsets"][0] + 1024
elif how == "format":
    h["__metadata__"]["nanochat.weights"] = "int4"
body = json.dumps(h).encode()
body += b" " * (-len(body) % 8)
open(dst, "wb").write(struct.pack("<Q", len(body)) + body + data[8 + n:])
EOF
}
damage "$TMP/d1" no_scale
expect_error "scale missing" "'transformer.h.2.mlp.c_fc.weight_scale' is missing" "$BIN" info -m "$TMP/d1"
damage "$TMP/d2" scale_shape
expect_error "scale shape" "scale 'transformer.h.1.attn.c_v.weight_scale' is f32 [128, 2]" "$BIN" info -m "$TMP/d2"
damage "$TMP/d3" format
expect_error "unknown format" 'unknown weight format "int4"' "$BIN" info -m "$TMP/d3"

# ---- eval ----
ref_bpb() { python3 -c "import json; print(json.load(open('tests/data/eval/reference.json'))['results']['$1']['bpb_limit'])"; }
check_bpb() { # name json-file reference tolerance
    python3 - "$@" <<'EOF' && ok || bad "$1: bits per byte off the reference ($(cat "$2"))"
import json, sys
name, path, ref, tol = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
got = json.load(open(path))["bpb"]
print(f"{name}: {got:.6f} bits/byte, PyTorch {ref:.6f}, relative difference {abs(got / ref - 1):.2e} (bound {tol:g})")
sys.exit(0 if abs(got / ref - 1) <= tol else 1)
EOF
}
EVAL=("$BIN" eval --device cpu --text "$TEXT" --limit 2048 --json)
"${EVAL[@]}" >"$TMP/e_bf16.json" 2>"$TMP/err" && check_bpb bf16 "$TMP/e_bf16.json" "$(ref_bpb bf16)" 1e-5 ||
    bad "eval bf16: $(cat "$TMP/err")"
NC_CPU_KERNELS=avx2 "${EVAL[@]}" --weights int8 >"$TMP/e_int8.json" 2>"$TMP/err" &&
    check_bpb "int8 (avx2, weight-only)" "$TMP/e_int8.json" "$(ref_bpb int8)" 1e-5 || bad "eval int8: $(cat "$TMP/err")"
"${EVAL[@]}" -m "$TMP/fp8" >"$TMP/e_fp8.json" 2>"$TMP/err" &&
    check_bpb "fp8 (quantized file)" "$TMP/e_fp8.json" "$(ref_bpb fp8)" 1e-5 || bad "eval fp8: $(cat "$TMP/err")"
"${EVAL[@]}" --weights int8 --kv-cache fp8 --compare bf16 --chats 2 --chat-tokens 24 >"$TMP/e_cmp.json" 2>"$TMP/err" &&
    check_bpb "int8 + fp8 KV, default kernels" "$TMP/e_cmp.json" "$(ref_bpb int8)" 5e-3 || bad "eval --compare: $(cat "$TMP/err")"
python3 - "$TMP/e_cmp.json" "$(ref_bpb bf16)" <<'EOF' && ok || bad "--compare report: $(cat "$TMP/e_cmp.json")"
import json, sys
j = json.load(open(sys.argv[1]))
c = j["compare"]
assert j["weights"] == "int8" and j["kv_cache"] == "fp8" and c["weights"] == "bf16", j
assert abs(c["bpb"] / float(sys.argv[2]) - 1) <= 1e-5, c
assert 0.5 < c["argmax_agreement"] <= 1 and len(c["chats"]) == 2, c
assert all(ch["tokens"] > 0 and ch["reference_tokens"] > 0 for ch in c["chats"]), c
print(f"--compare: agreement {c['argmax_agreement']:.4f}, chats {[ch['first_divergence'] for ch in c['chats']]}")
EOF
expect_error "eval without --text" "--text FILE is required" "$BIN" eval
expect_error "eval of a missing file" "$TMP/none.txt" "$BIN" eval --text "$TMP/none.txt"
expect_error "eval --compare int4" "unknown weight format 'int4'" "$BIN" eval --text "$TEXT" --compare int4
: >"$TMP/empty.txt"
expect_error "eval of an empty text" "holds no text" "$BIN" eval --device cpu --text "$TMP/empty.txt"

finish test_quantize_cli
