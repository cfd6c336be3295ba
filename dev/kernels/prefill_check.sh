#!/usr/bin/env bash
# dev/kernels/prefill_check.sh: one lean device call for a prefill change
# (stays under ~230 s): the prefill-attention harness (dev/kernels/
# attn_prefill.cu: CPU reference on long, windowed, GQA and ragged cases,
# kernel time of the d34 shape), test_cuda_backend, then the prefill bench
# of the new build and of the baseline build (.gpu-bin-prefill/nanochat_base,
# the parent commit) back to back on the same card, and one eager per-stage
# profile of each. Binaries are prebuilt here and carried:
#   make -k BUILD=build-prefill -j2 CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a" \
#        build-prefill/nanochat build-prefill/tests/test_cuda_backend
#   cp build-prefill/nanochat build-prefill/tests/test_cuda_backend .gpu-bin-prefill/
#   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Isrc -DNC_WITH_CUDA \
#        -o .gpu-bin-prefill/attn_prefill dev/kernels/attn_prefill.cu
#   cp .gpu-bin/libs/* .gpu-bin-prefill/libs/
# Logs under $OUT, a short table last.
set -u
OUT=${OUT:-/tmp/nc-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.gpu-bin-prefill/libs
B=.gpu-bin-prefill
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
if [ -x $B/attn_prefill ]; then
    timeout 40 $B/attn_prefill >"$OUT/harness.txt" 2>&1
    echo "harness: rc=$? ($((SECONDS - t0)) s)"
    cat "$OUT/harness.txt"
fi
timeout 100 $B/test_cuda_backend >"$OUT/test.log" 2>&1
echo "test_cuda_backend: rc=$? ($((SECONDS - t0)) s)"
grep -E "worst|FAIL" "$OUT/test.log" | head -20
tail -3 "$OUT/test.log"
P="--random d34 --device cuda --prefill 2048 --ctx none --batch none"
timeout 45 $B/nanochat bench $P >"$OUT/bench_new.txt" 2>&1
echo "bench new: rc=$? ($((SECONDS - t0)) s)"
if [ -x $B/nanochat_base ]; then
    timeout 45 $B/nanochat_base bench $P >"$OUT/bench_base.txt" 2>&1
    echo "bench base: rc=$? ($((SECONDS - t0)) s)"
fi
left=$((225 - SECONDS + t0))
[ $left -gt 20 ] && NC_CUDA_PROFILE=1 timeout $((left / 2)) $B/nanochat bench $P >"$OUT/profile_new.txt" 2>&1
left=$((225 - SECONDS + t0))
[ $left -gt 15 ] && [ -x $B/nanochat_base ] &&
    NC_CUDA_PROFILE=1 timeout $((left - 3)) $B/nanochat_base bench $P >"$OUT/profile_base.txt" 2>&1
echo "==== new";  grep -E "^(device|prefill)" "$OUT/bench_new.txt"
echo "==== base"; grep -E "^prefill" "$OUT/bench_base.txt" 2>/dev/null
echo "==== profile new";  tail -15 "$OUT/profile_new.txt" 2>/dev/null
echo "==== profile base"; tail -15 "$OUT/profile_base.txt" 2>/dev/null
echo "total $((SECONDS - t0)) s"
