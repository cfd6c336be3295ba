#!/usr/bin/env bash
# tests/run.sh: runs every test and ends with `tests: N passed, N failed`.
#
# A test is one of:
#   build/tests/test_*        C tests (tests/c/test_*.c)
#   tests/py/test_*.py        Python tests comparing against reference tools
#   tests/sh/test_*.sh        CLI / end-to-end tests
#   build/fuzz/fuzz_*         libFuzzer targets, run for FUZZ_SECONDS each
# Exit status 0 = pass, 77 = skipped (e.g. no GPU), anything else = fail.
# Set TESTS=pattern to run only tests whose name contains it.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
export NC_BIN="$PWD/$BUILD/nanochat" NC_BUILD="$PWD/$BUILD"
mkdir -p "$BUILD/test-logs"
passed=0 failed=0 skipped=0 failures=()

run_one() { # name, command...
    local name=$1; shift
    case "$name" in *"${TESTS:-}"*) ;; *) return ;; esac
    local log="$BUILD/test-logs/$name.log" start=$SECONDS rc
    "$@" >"$log" 2>&1 </dev/null
    rc=$?
    local took=$((SECONDS - start))
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1)); printf 'PASS  %-40s %4ss\n' "$name" "$took"
    elif [ $rc -eq 77 ]; then
        skipped=$((skipped + 1)); printf 'SKIP  %-40s %s\n' "$name" "$(tail -n 1 "$log")"
    else
        failed=$((failed + 1)); failures+=("$name")
        printf 'FAIL  %-40s %4ss (exit %d)\n' "$name" "$took" "$rc"
        tail -n 25 "$log" | sed 's/^/      | /'
    fi
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] && run_one "$(basename "$t")" "$t"
done
for t in tests/py/test_*.py; do
    [ -f "$t" ] && run_one "$(basename "$t" .py)" python3 "$t"
done
for t in tests/sh/test_*.sh; do
    [ -f "$t" ] && run_one "$(basename "$t" .sh)" bash "$t"
done
if command -v clang >/dev/null 2>&1 && make -s fuzz BUILD="$BUILD" >"$BUILD/test-logs/fuzz-build.log" 2>&1; then
    for f in "$BUILD"/fuzz/fuzz_*; do
        [ -x "$f" ] || continue
        name=$(basename "$f")
        corpus="tests/fuzz/corpus/${name#fuzz_}"
        mkdir -p "$BUILD/fuzz-work/$name"
        run_one "$name" "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 \
            "$BUILD/fuzz-work/$name" $( [ -d "$corpus" ] && echo "$corpus" )
    done
else
    failed=$((failed + 1)); failures+=("fuzz-build")
    echo "FAIL  fuzz-build (see $BUILD/test-logs/fuzz-build.log; is clang installed?)"
fi

[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
