# shellcheck shell=bash
# tests/sh/lib.sh: what the CLI tests (tests/sh/test_*.sh) source first.
#   - moves to the repository root; BIN is $NC_BIN or build/nanochat;
#   - TMP: a fresh directory, removed on exit;
#   - ok / bad MESSAGE: one check passed / failed (the message printed);
#   - expect_error NAME NEEDLE CMD...: CMD (stdin closed) must fail the way
#     every bad input must: exit status 1..127 (not a crash), exactly one line
#     on stderr containing NEEDLE, nothing on stdout;
#   - expect_cli_error NAME NEEDLE ARGS...: the same for "$BIN" ARGS...;
#   - require_bin: stops the test when BIN is not there;
#   - finish NAME: prints "NAME: N passed, N failed", fails if any failed
#     (the script's last command).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
BIN=${NC_BIN:-build/nanochat}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

require_bin() { [ -x "$BIN" ] || { echo "no binary at $BIN"; exit 1; }; }

expect_error() {
    local name=$1 needle=$2 rc lines
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
    rc=$?
    lines=$(wc -l <"$TMP/err")
    if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then bad "$name: exit $rc: $(cat "$TMP/err")"; return; fi
    if [ "$lines" -ne 1 ]; then bad "$name: $lines lines on stderr: $(cat "$TMP/err")"; return; fi
    if ! grep -qF -- "$needle" "$TMP/err"; then bad "$name: stderr lacks '$needle': $(cat "$TMP/err")"; return; fi
    if [ -s "$TMP/out" ]; then bad "$name: wrote to stdout: $(head -c 200 "$TMP/out")"; return; fi
    ok
}

expect_cli_error() {
    local name=$1 needle=$2
    shift 2
    expect_error "$name" "$needle" "$BIN" "$@"
}

finish() {
    echo "$1: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
