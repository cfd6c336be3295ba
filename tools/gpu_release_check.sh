#!/usr/bin/env bash
# tools/gpu_release_check.sh: the whole GPU verification of a release in one
# device call (~10 min): the CUDA test, compute-sanitizer (quick test), the
# server load test (tools/gpu_serve_bench.sh), `nanochat bench` on d34, the
# PyTorch baselines on the same card (NO_PYTORCH=1 skips them: ~1 min
# instead) and picochat end to end on the GPU. Uses the prebuilt binaries in
# .gpu-bin (see tools/gpu_check.sh). Logs under $OUT; a summary last.
set -u
OUT=${OUT:-/tmp/nc-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu-bin/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
B=.gpu-bin
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
summary=()
t0=$SECONDS
timeout 90 $B/test_cuda_backend >"$OUT/test.log" 2>&1
summary+=("test_cuda_backend: rc=$? ($((SECONDS - t0)) s) $(tail -n 1 "$OUT/test.log")")
t0=$SECONDS
NC_CUDA_TEST_QUICK=1 timeout 120 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
    $B/test_cuda_backend >"$OUT/sanitizer.log" 2>&1
summary+=("compute-sanitizer: rc=$? ($((SECONDS - t0)) s) $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)")
t0=$SECONDS
OUT="$OUT/serve" timeout 170 bash tools/gpu_serve_bench.sh >"$OUT/serve_summary.txt" 2>&1
summary+=("serve bench: rc=$? ($((SECONDS - t0)) s)")
t0=$SECONDS
timeout 90 $B/nanochat bench --random d34 --device cuda >"$OUT/bench.txt" 2>&1
summary+=("bench: rc=$? ($((SECONDS - t0)) s)")
if [ -z "${NO_PYTORCH:-}" ]; then
    t0=$SECONDS
    PYTHONUNBUFFERED=1 timeout 240 python3 tools/bench_pytorch.py --model d34 >"$OUT/pytorch.txt" 2>&1
    summary+=("pytorch: rc=$? ($((SECONDS - t0)) s)")
fi
t0=$SECONDS
NC_BIN="$PWD/$B/nanochat" timeout 200 python3 tests/py/test_picochat_e2e.py >"$OUT/picochat.txt" 2>&1
summary+=("picochat end to end: rc=$? ($((SECONDS - t0)) s) $(tail -n 1 "$OUT/picochat.txt")")
echo "==== serve"; cat "$OUT/serve_summary.txt"
echo "==== bench"; grep -vE '^\s*$' "$OUT/bench.txt" | tail -14
[ -z "${NO_PYTORCH:-}" ] && { echo "==== pytorch"; grep -v '^JSON' "$OUT/pytorch.txt" | tail -14; }
echo "==== summary"; printf '%s\n' "${summary[@]}"
