#!/usr/bin/env bash
# test_forward_cli.sh: `nanochat forward` end to end on a real nanochat
# checkpoint file (tests/data/forward/tiny_v1: model_000010.pt written by
# torch.save, meta_000010.json), against the logits of transformers'
# NanoChatForCausalLM adjusted to nanochat (tools/make_forward_fixtures.py).
#   - logits equal the reference: max|ours - ref| / max|ref| <= 1e-4 per row,
#     with 1 and 2 threads, and the scalar kernels (NC_CPU_KERNELS=scalar);
#   - the file is exactly T x V fp32;
#   - bad flags / ids / missing model: exit 1..127, one line on stderr.
. "$(dirname "$0")/lib.sh"
DIR=tests/data/forward/tiny_v1
require_bin

IDS=$(cat "$DIR/expected_ids.txt")

compare() { # name file
    python3 - "$1" "$2" "$DIR/expected_logits.f32" <<'EOF'
import sys
import numpy as np
name, ours, ref = sys.argv[1:]
b = np.fromfile(ref, "<f4").reshape(-1, 256)
a = np.fromfile(ours, "<f4")
if a.size != b.size:
    print(f"{name}: {a.size} floats, expected {b.size}")
    sys.exit(1)
a = a.reshape(b.shape)
err = (np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)).max()
print(f"{name}: worst relative row error {err:.3g}")
sys.exit(0 if err <= 1e-4 else 1)
EOF
}

for threads in 1 2; do
    if "$BIN" forward -m "$DIR" --device cpu --threads $threads --ids "$IDS" --out "$TMP/l.f32" 2>"$TMP/err"; then
        compare "threads=$threads" "$TMP/l.f32" && ok || bad "logits differ with $threads threads"
    else
        bad "forward failed with $threads threads: $(cat "$TMP/err")"
    fi
done
if NC_CPU_KERNELS=scalar "$BIN" forward -m "$DIR" --device cpu --ids "${IDS// /,}" --out "$TMP/s.f32" 2>"$TMP/err"; then
    compare "scalar kernels, comma-separated ids" "$TMP/s.f32" && ok || bad "scalar logits differ"
else
    bad "forward (scalar) failed: $(cat "$TMP/err")"
fi
# stdout output
if "$BIN" forward -m "$DIR" --device cpu --ids "$IDS" --out - >"$TMP/o.f32" 2>"$TMP/err"; then
    compare "--out -" "$TMP/o.f32" && ok || bad "stdout logits differ"
else
    bad "forward --out - failed: $(cat "$TMP/err")"
fi

M=(-m "$DIR" --device cpu)
expect_cli_error "no ids" "--ids is required" forward "${M[@]}" --out "$TMP/x"
expect_cli_error "no out" "--out is required" forward "${M[@]}" --ids "1 2"
expect_cli_error "empty ids" "--ids is empty" forward "${M[@]}" --ids " " --out "$TMP/x"
expect_cli_error "junk id" "'1x' is not a token id" forward "${M[@]}" --ids "1 1x 2" --out "$TMP/x"
expect_cli_error "negative id" "'-3' is not a token id" forward "${M[@]}" --ids "1 -3" --out "$TMP/x"
expect_cli_error "id beyond vocab" "outside the vocabulary [0, 256)" forward "${M[@]}" --ids "1 256" --out "$TMP/x"
expect_cli_error "too long" "supports at most 640 positions" forward "${M[@]}" --ids "$(seq -s ' ' 1 641 | tr -d '\n' | sed 's/[0-9]\+/7/g')" --out "$TMP/x"
expect_cli_error "unknown flag" "unknown option '--bogus'" forward "${M[@]}" --bogus --ids 1 --out "$TMP/x"
expect_cli_error "missing value" "--out needs a value" forward "${M[@]}" --ids 1 --out
expect_cli_error "missing model" "nanochat:" forward -m "$TMP/nonexistent" --ids 1 --out "$TMP/x"
expect_cli_error "unwritable out" "cannot write" forward "${M[@]}" --ids "1 2" --out "$TMP/no/such/dir/x"
"$BIN" forward --help | grep -q "little-endian" && ok || bad "--help"

finish test_forward_cli
