#!/usr/bin/env bash
# dev/kernels/attn_check.sh: one lean device call for a decode-kernel change
# (no sanitizer, no PyTorch; stays under ~220 s): test_cuda_backend once,
# then the reduced bench of the new build and of the previous build
# (.gpu-bin/nanochat_base, prebuilt from the parent commit) on the same card,
# then a per-stage profile of batch 128 if time is left. Logs under $OUT,
# a short table last. Binaries are prebuilt here and carried (.gpu-bin, see
# tools/gpu_check.sh).
set -u
OUT=${OUT:-/tmp/nc-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu-bin/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
B=.gpu-bin
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 90 $B/test_cuda_backend >"$OUT/test.log" 2>&1
trc=$?
echo "test_cuda_backend: rc=$trc ($((SECONDS - t0)) s): $(tail -n 1 "$OUT/test.log")"
grep -E "worst|FAIL" "$OUT/test.log" | head -20
[ $trc -eq 0 ] || exit 1
ARGS="--random d34 --device cuda --ctx 128,1024 --batch 8,64,128"
timeout 75 $B/nanochat bench $ARGS --prefill 2048 >"$OUT/bench_new.txt" 2>&1
echo "bench new: rc=$? ($((SECONDS - t0)) s)"
if [ -x $B/nanochat_base ]; then
    timeout 60 $B/nanochat_base bench $ARGS --prefill 0 >"$OUT/bench_base.txt" 2>&1
    echo "bench base: rc=$? ($((SECONDS - t0)) s)"
fi
left=$((215 - SECONDS + t0))
if [ $left -gt 25 ]; then
    NC_CUDA_PROFILE=1 timeout $((left - 5)) $B/nanochat bench --random d34 --device cuda --prefill 0 --ctx none \
        --batch 128 --batch-steps 4 >"$OUT/profile.txt" 2>&1
fi
echo "==== new";  grep -E "^(device|bandwidth|prefill|decode|batch)" "$OUT/bench_new.txt"
echo "==== base"; grep -E "^(prefill|decode|batch)" "$OUT/bench_base.txt" 2>/dev/null
echo "==== profile batch 128"; grep -vE "^(device|model|bandwidth|test|$)" "$OUT/profile.txt" 2>/dev/null | tail -14
echo "total $((SECONDS - t0)) s"
