#!/usr/bin/env bash
# test_cpu_variants.sh: the CPU backend's exactness with every kernel
# variant this machine runs, each forced from outside with NC_CPU_KERNELS
# (the way a user or a benchmark forces one), through the CLI and the C API:
#   - tests/sh/test_forward_cli.sh: a real checkpoint's logits against
#     transformers' (relative error <= 1e-4);
#   - test_api: the bundled picochat's greedy transcripts equal PyTorch's;
#   - test_sched_invariance: bit-identical tokens and log-probs of a seeded
#     request alone, in crowds, from the prefix cache, on 1-3 threads.
# The VNNI variants run avx2's / avx512's kernels on float weights and
# differ only for int8 weights (q8 activations), so they run
# tests/sh/test_quantize_cli.sh instead: int8 through the CLI, eval's bits
# per byte against PyTorch's.
# (test_cpu_forward, test_cpu_kernels, test_cpu_invariance, test_quant and
# test_quant_forward loop over every variant by themselves.) A variant the
# CPU lacks is reported and skipped; the portable scalar one always runs.
# avx512bf16 rounds x to bf16 (not exact) but still passes these: tiny_v1's
# matrices are fp32, and picochat's greedy transcripts survive the rounding
# (dev/kernels/NOTES_CPU.md).
set -u
cd "$(dirname "$0")/../.."
BIN=${NC_BIN:-build/nanochat}
BUILD=${NC_BUILD:-build}
[ -x "$BIN" ] || { echo "no binary at $BIN"; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0 ran=0
for v in scalar avx2 avxvnni avx512 avx512vnni avx512bf16; do
    if ! NC_CPU_KERNELS=$v "$BIN" forward -m tests/data/forward/tiny_v1 --device cpu --ids 1 --out "$TMP/x" \
        2>"$TMP/err"; then
        if grep -q "is not available here" "$TMP/err"; then
            echo "$v: not supported on this CPU, skipped"
            continue
        fi
        echo "FAIL: $v: $(cat "$TMP/err")"
        fail=$((fail + 1))
        continue
    fi
    ran=$((ran + 1))
    tests=("bash tests/sh/test_forward_cli.sh" "$BUILD/tests/test_api" "$BUILD/tests/test_sched_invariance")
    case $v in *vnni) tests=("bash tests/sh/test_quantize_cli.sh") ;; esac
    for t in "${tests[@]}"; do
        if NC_CPU_KERNELS=$v $t >"$TMP/log" 2>&1; then
            pass=$((pass + 1))
            echo "$v: $(basename "${t##* }"): $(tail -n 1 "$TMP/log")"
        else
            fail=$((fail + 1))
            echo "FAIL: $v: $t:"
            tail -n 20 "$TMP/log" | sed 's/^/  | /'
        fi
    done
done
[ $ran -gt 0 ] || { echo "FAIL: no variant ran"; fail=$((fail + 1)); }
echo "test_cpu_variants: $pass passed, $fail failed"
[ $fail -eq 0 ]
