#!/usr/bin/env bash
# test_tokenize_cli.sh: `nanochat tokenize` flags and errors. Good paths are
# compared with ids tiktoken made (tests/data/tokenizer/cases.json); every
# bad input must give exactly one line on stderr, nothing on stdout and a
# non-zero exit, never a crash. (tests/py/test_tokenizer_tiktoken.py does
# the bulk comparison with tiktoken.)
set -u
cd "$(dirname "$0")/../.."
BIN=${NC_BIN:-build/nanochat}
DATA=tests/data/tokenizer
PKL=$DATA/tokenizer.pkl
JSON=$DATA/tokenizer.json
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0 checks=0

ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }

# expect_error "what" stdin args...: non-zero exit (not a signal), one stderr line, no stdout
expect_error() {
    local what=$1 input=$2; shift 2
    printf '%s' "$input" | "$BIN" tokenize "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    local lines; lines=$(wc -l <"$TMP/err")
    if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then bad "$what: exit $rc"; return; fi
    if [ "$lines" -ne 1 ] || [ -s "$TMP/out" ]; then
        bad "$what: want one stderr line and no stdout, got $lines lines: $(head -c 300 "$TMP/err")"
        return
    fi
    ok
}

# Reference ids and texts from the fixture (made by tiktoken).
python3 - "$DATA/cases.json" "$TMP" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
enc = {e["text"]: e["ids"] for e in c["encode"]}
t = "Hello, World!"
open(sys.argv[2] + "/text", "w").write(t)
open(sys.argv[2] + "/ids", "w").write(" ".join(map(str, enc[t])) + "\n")
chat = c["chat"][2]
open(sys.argv[2] + "/chat.json", "w").write(json.dumps(chat["messages"]))
open(sys.argv[2] + "/chat_ids", "w").write(" ".join(map(str, chat["ids"])) + "\n")
PY

# ---- good paths ----
for tok in "$PKL" "$JSON"; do
    out=$("$BIN" tokenize --tokenizer "$tok" <"$TMP/text") && [ "$out" = "$(cat "$TMP/ids")" ] && ok ||
        bad "encode with $tok: '$out' != '$(cat "$TMP/ids")'"
    out=$("$BIN" tokenize --decode --tokenizer "$tok" <"$TMP/ids") && [ "$out" = "$(cat "$TMP/text")" ] && ok ||
        bad "decode with $tok: '$out'"
    out=$("$BIN" tokenize --chat --tokenizer "$tok" <"$TMP/chat.json") && [ "$out" = "$(cat "$TMP/chat_ids")" ] && ok ||
        bad "chat with $tok: '$out'"
done
"$BIN" tokenize --help | grep -q "usage: nanochat tokenize" && ok || bad "--help"
"$BIN" tokenize -h >/dev/null && ok || bad "-h"
out=$(printf '' | "$BIN" tokenize --tokenizer "$PKL") && [ -z "$out" ] && ok || bad "empty input: '$out'"
out=$(printf '1, 2\n3' | "$BIN" tokenize --decode --jsonl --tokenizer "$PKL") &&
    [ "$(printf '%s' "$out" | wc -l)" = 1 ] && ok || bad "--decode --jsonl lines: '$out'"
# a tokenizer found through -m (a flat checkpoint dir; no weights are read)
mkdir -p "$TMP/flat" && : >"$TMP/flat/model_000005.pt" && echo '{}' >"$TMP/flat/meta_000005.json" &&
    cp "$PKL" "$TMP/flat/tokenizer.pkl"
out=$("$BIN" tokenize -m "$TMP/flat" <"$TMP/text") && [ "$out" = "$(cat "$TMP/ids")" ] && ok ||
    bad "-m flat dir: '$out'"

# ---- errors ----
expect_error "unknown flag" "x" --tokenizer "$PKL" --bogus
expect_error "missing --tokenizer value" "x" --tokenizer
expect_error "--decode with --chat" "1" --tokenizer "$PKL" --decode --chat
expect_error "--random" "x" --random d20
expect_error "--tokenizer and -m" "x" --tokenizer "$PKL" -m "$TMP/flat"
expect_error "missing tokenizer file" "x" --tokenizer "$TMP/nope.pkl"
expect_error "missing model dir" "x" -m "$TMP/nope"
mkdir -p "$TMP/empty" && expect_error "dir without a model" "x" -m "$TMP/empty"
mkdir -p "$TMP/notok" && : >"$TMP/notok/model_000001.pt" && echo '{}' >"$TMP/notok/meta_000001.json"
expect_error "model without tokenizer" "x" -m "$TMP/notok"
: >"$TMP/empty.pkl" && expect_error "empty tokenizer" "x" --tokenizer "$TMP/empty.pkl"
head -c 5000 "$PKL" >"$TMP/trunc.pkl" && expect_error "truncated pkl" "x" --tokenizer "$TMP/trunc.pkl"
head -c 5000 "$JSON" >"$TMP/trunc.json" && expect_error "truncated json" "x" --tokenizer "$TMP/trunc.json"
printf 'not a tokenizer' >"$TMP/junk" && expect_error "junk tokenizer" "x" --tokenizer "$TMP/junk"
expect_error "directory as tokenizer" "x" --tokenizer "$TMP"
expect_error "non-numeric id" "1 two 3" --decode --tokenizer "$PKL"
expect_error "id out of range" "1 2048" --decode --tokenizer "$PKL"
expect_error "negative id" "-1" --decode --tokenizer "$PKL"
expect_error "huge id" "99999999999999999999" --decode --tokenizer "$PKL"
expect_error "bad chat JSON" '[{"role": "user", "content": "x"' --chat --tokenizer "$PKL"
expect_error "chat not an array" '{"role": "user"}' --chat --tokenizer "$PKL"
expect_error "bad role" '[{"role": "robot", "content": "x"}]' --chat --tokenizer "$PKL"
expect_error "content not a string" '[{"role": "user", "content": 5}]' --chat --tokenizer "$PKL"
expect_error "empty conversation" '[]' --chat --tokenizer "$PKL"
expect_error "system not first" '[{"role":"user","content":"a"},{"role":"system","content":"b"}]' --chat --tokenizer "$PKL"
expect_error "system then assistant" '[{"role":"system","content":"a"},{"role":"assistant","content":"b"}]' --chat --tokenizer "$PKL"
expect_error "jsonl not a string" '42
"ok"
' --jsonl --tokenizer "$PKL"
expect_error "jsonl NUL" '"a\u0000b"' --jsonl --tokenizer "$PKL"
# non-UTF-8 path
expect_error "non-UTF-8 path" "x" --tokenizer "$TMP/$(printf 'bad\377name').pkl"

echo "test_tokenize_cli: $checks checks, $fails failed"
[ $fails -eq 0 ]
