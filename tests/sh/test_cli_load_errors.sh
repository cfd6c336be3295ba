#!/usr/bin/env bash
# test_cli_load_errors.sh: every bad model input gives one clear line on
# stderr and a non-zero exit below 128 (no crash, no abort), and the good
# fixtures still load. Damaged files are made here from the committed
# fixtures (tests/data/ckpt/, tools/make_checkpoint_fixtures.py) with
# Python's standard library only.
. "$(dirname "$0")/lib.sh"
DATA=tests/data/ckpt
require_bin

expect_ok() {
    local name=$1; shift
    if "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"; then ok; else bad "$name: exit $?: $(cat "$TMP/err")"; fi
}

# a fresh copy of the v1 checkpoint dir to damage
fresh() { rm -rf "$TMP/m"; cp -r "$DATA/v1" "$TMP/m"; }
PT=model_000005.pt
META=meta_000005.json

# ---- the good ones still load ----
for m in v1 v1_zip64 v6 base hf hf_sharded; do expect_ok "info $m" info -m "$DATA/$m"; done
expect_ok "info --json" info --json -m "$DATA/v6"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$TMP/out" && ok || bad "info --json is not JSON"

# ---- missing files ----
expect_cli_error "no such path" "does-not-exist" info -m "$TMP/does-not-exist"
mkdir -p "$TMP/empty"
expect_cli_error "empty dir" "holds no model" info -m "$TMP/empty"
fresh; rm "$TMP/m/$META"
expect_cli_error "missing meta" "meta_000005.json" info -m "$TMP/m"
fresh
expect_cli_error "missing --step" "steps present: 5" info -m "$TMP/m" --step 4
expect_cli_error "missing tokenizer" "no such file" info -m "$TMP/m" --tokenizer "$TMP/nope.pkl"
expect_cli_error "bad --source" "--source must be" info -m "$TMP/m" --source chat
expect_cli_error "--source outside a base dir" "base dir" info -m "$TMP/m" --source sft
expect_cli_error "bad --step" "--step expects" info -m "$TMP/m" --step -3
expect_cli_error "missing -m value" "needs a value" info -m
expect_cli_error "-m and --random" "mutually exclusive" info -m "$TMP/m" --random d20
expect_cli_error "bad --random" "bad --random spec" info --random 3,100,7
expect_cli_error "unknown option" "unknown option" info --frobnicate
NANOCHAT_MODEL="$TMP/nowhere" expect_cli_error "missing default model" "does not exist" info

# ---- truncated .pt ----
for n in 0 10 1000 100000; do
    fresh; head -c $n "$DATA/v1/$PT" >"$TMP/m/$PT"
    expect_cli_error "truncated .pt ($n bytes)" "$PT" info -m "$TMP/m"
done
fresh; echo "this text file is not a zip archive at all" >"$TMP/m/$PT"
expect_cli_error "text as .pt" "end-of-central-directory" info -m "$TMP/m"

# ---- corrupt zip directory / pickle, patched in place ----
patch_py() { # FILE PYTHON-EXPR-ON-bytearray-d
    python3 - "$1" "$2" <<'EOF'
import sys, struct
path, expr = sys.argv[1], sys.argv[2]
d = bytearray(open(path, "rb").read())
eocd = len(d) - 22
loc = eocd - 20
eocd64 = struct.unpack_from("<Q", d, loc + 8)[0]
cd = struct.unpack_from("<Q", d, eocd64 + 48)[0]
def pkl():
    # local header of the first entry (data.pkl): data follows name + extra
    n, e = struct.unpack_from("<HH", d, 26)
    return 30 + n + e
exec(expr)
open(path, "wb").write(d)
EOF
}
fresh; patch_py "$TMP/m/$PT" 'struct.pack_into("<Q", d, eocd64 + 48, len(d) * 2)'
expect_cli_error "central directory past the file" "central directory" info -m "$TMP/m"
fresh; patch_py "$TMP/m/$PT" 'd[cd:cd+4] = b"XXXX"'
expect_cli_error "central record signature" "central directory record" info -m "$TMP/m"
fresh; patch_py "$TMP/m/$PT" 'struct.pack_into("<Q", d, eocd64 + 32, 100000)'
expect_cli_error "entry count beyond directory" "cannot fit" info -m "$TMP/m"
fresh; patch_py "$TMP/m/$PT" 'struct.pack_into("<I", d, cd + 42, 0x7fff0000)'
expect_cli_error "local header offset past the file" "local header" info -m "$TMP/m"
fresh; patch_py "$TMP/m/$PT" 'struct.pack_into("<H", d, cd + 10, 8)'
expect_cli_error "compressed entry" "compressed" info -m "$TMP/m"
# the pickle: PROTO 2 then its first opcode (EMPTY_DICT / GLOBAL) replaced by INST ('i')
fresh; patch_py "$TMP/m/$PT" 'assert d[pkl()] == 0x80; d[pkl() + 2] = ord("i")'
expect_cli_error "unexpected pickle opcode" "unsupported opcode 0x69 ('i') at offset 2" info -m "$TMP/m"
fresh; patch_py "$TMP/m/$PT" 'd[pkl() + 2] = 0x82'
expect_cli_error "EXT1 pickle opcode" "unsupported opcode 0x82" info -m "$TMP/m"

# ---- wrong shapes / unknown architectures ----
fresh; python3 - "$TMP/m/$META" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); m["model_config"]["n_kv_head"] = 2
json.dump(m, open(sys.argv[1], "w"))
EOF
expect_cli_error "wrong shape" "attn.c_k.weight' has shape [16, 32], expected [32, 32]" info -m "$TMP/m"
fresh; python3 - "$TMP/m/$META" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); m["model_config"]["n_layer"] = 3
json.dump(m, open(sys.argv[1], "w"))
EOF
expect_cli_error "too many layers in meta" "lacks tensor 'transformer.h.2.attn.c_q.weight'" info -m "$TMP/m"
fresh; echo '{"model_config": {"n_layer": 2}}' >"$TMP/m/$META"
expect_cli_error "meta without sizes" "missing \"sequence_len\"" info -m "$TMP/m"
fresh; echo '{not json' >"$TMP/m/$META"
expect_cli_error "meta not JSON" "not a JSON object" info -m "$TMP/m"
expect_cli_error "extra tensor" "unexpected tensor 'transformer.h.0.attn.foo.weight'" info -m "$DATA/bad/extra_tensor"
expect_cli_error "missing tensor" "lacks tensor 'transformer.h.0.mlp.c_fc.weight'" info -m "$DATA/bad/missing_tensor"
rm -rf "$TMP/hf"; cp -r "$DATA/hf" "$TMP/hf"
sed -i 's/"model_type": "nanochat"/"model_type": "llama"/' "$TMP/hf/config.json"
expect_cli_error "HF model_type" "not \"nanochat\"" info -m "$TMP/hf"
rm -rf "$TMP/hf"; cp -r "$DATA/hf" "$TMP/hf"; head -c 5000 "$DATA/hf/model.safetensors" >"$TMP/hf/model.safetensors"
expect_cli_error "truncated safetensors" "data_offsets" info -m "$TMP/hf"
rm -rf "$TMP/hf"; cp -r "$DATA/hf_sharded" "$TMP/hf"; rm "$TMP/hf/model-00003-of-00007.safetensors"
expect_cli_error "missing shard" "model-00003-of-00007.safetensors" info -m "$TMP/hf"

# ---- non-UTF-8 paths ----
BADNAME=$(printf 'bad\xff\xfename')
expect_cli_error "missing non-UTF-8 path" "No such file" info -m "$TMP/$BADNAME"
cp -r "$DATA/v1" "$TMP/$BADNAME"
expect_ok "existing non-UTF-8 path" info -m "$TMP/$BADNAME"
expect_ok "non-UTF-8 path --json" info --json -m "$TMP/$BADNAME"
python3 -c 'import json,sys; json.loads(open(sys.argv[1],"rb").read().decode("utf-8"))' "$TMP/out" && ok ||
    bad "--json with a non-UTF-8 path is not valid UTF-8 JSON"

# ---- tokenizers (errors from the tokenizer's loader, reported by the CLI) ----
fresh; : >"$TMP/m/tokenizer.pkl"
expect_cli_error "empty tokenizer beside the model" "tokenizer.pkl" info -m "$TMP/m"
fresh; : >"$TMP/empty.pkl"
expect_cli_error "empty --tokenizer" "empty.pkl" info -m "$TMP/m" --tokenizer "$TMP/empty.pkl"
head -c 100 "$DATA/v1/tokenizer.pkl" >"$TMP/trunc.pkl"
expect_cli_error "truncated --tokenizer" "trunc.pkl" info -m "$TMP/m" --tokenizer "$TMP/trunc.pkl"

finish test_cli_load_errors
