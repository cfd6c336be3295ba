#!/usr/bin/env bash
# dev/kernels/decode_check.sh: one lean device call for a decode change:
# the GEMV harness (single matrices and the whole step's GEMVs as a graph,
# PDL off/on), test_cuda_backend (default, PDL on, and NC_CUDA_PDL=0), then
# batch-1 decode and small batches with PDL on and off on the same card. Binaries prebuilt here and carried in
# .gpu-bin (see tools/gpu_check.sh). Logs under $OUT, a short table last.
set -u
OUT=${OUT:-/tmp/nc-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu-bin/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
B=.gpu-bin
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 60 $B/gemv_harness >"$OUT/gemv.txt" 2>&1
echo "gemv harness: rc=$? ($((SECONDS - t0)) s)"
for v in "NC_CUDA_PDL=0" "NC_CUDA_PDL=1"; do
    env $v timeout 90 $B/test_cuda_backend >"$OUT/test_$v.log" 2>&1
    echo "test_cuda_backend $v: rc=$? ($((SECONDS - t0)) s): $(tail -n 1 "$OUT/test_$v.log")"
    grep -m 10 FAIL "$OUT/test_$v.log"
done
: >"$OUT/bench.txt"
for p in 1 0; do
    echo "## NC_CUDA_PDL=$p" >>"$OUT/bench.txt"
    NC_CUDA_PDL=$p timeout 60 $B/nanochat bench --random d34 --device cuda --prefill 0 \
        --ctx 128,1024 --batch ${BATCHES:-4,64} 2>&1 | grep -E "^(bandwidth|decode|batch)" >>"$OUT/bench.txt"
done
echo "bench: ($((SECONDS - t0)) s)"
if [ $((SECONDS - t0)) -lt 170 ]; then
    NC_CUDA_PROFILE=1 timeout 40 $B/nanochat bench --random d34 --device cuda --prefill 0 --ctx 1024 \
        --batch none --steps 16 >"$OUT/profile.txt" 2>&1
fi
echo "==== gemv harness"; cat "$OUT/gemv.txt"
echo "==== bench"; cat "$OUT/bench.txt"
echo "==== profile decode @1024 (eager, PDL on)"; grep -vE "^(device|model|bandwidth|test|$)" "$OUT/profile.txt" 2>/dev/null | tail -14
echo "total $((SECONDS - t0)) s"
