#!/usr/bin/env bash
# dev/kernels/prefill_check.sh: one lean device call for a prefill change
# (stays under ~150 s): the prefill-attention harness (dev/kernels/
# attn_prefill.cu: CPU reference on long, windowed, GQA and ragged cases and
# the kernel time of the d34 shape), test_cuda_backend, then the d34 prefill
# bench of the new build, of an optional intermediate build (nanochat_attn)
# and of the baseline build (nanochat_base, the parent commit), interleaved
# 3 rounds on the same card, and one eager per-stage profile of the new and
# the baseline build. Binaries are prebuilt here and
# carried in .gpu-bin-prefill (the device image lacks cjson, pcre2,
# microhttpd and libedit):
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
    timeout 60 $B/attn_prefill >"$OUT/harness.txt" 2>&1
    echo "harness: rc=$? ($((SECONDS - t0)) s)"
    cat "$OUT/harness.txt"
fi
timeout 100 $B/test_cuda_backend >"$OUT/test.log" 2>&1
echo "test_cuda_backend: rc=$? ($((SECONDS - t0)) s): $(tail -n 1 "$OUT/test.log")"
grep -E "worst|FAIL" "$OUT/test.log" | head -20
if [ -x $B/test_cuda_backend_attn ]; then
    timeout 60 $B/test_cuda_backend_attn >"$OUT/test_attn.log" 2>&1
    echo "test_cuda_backend_attn: rc=$? $(tail -n 1 "$OUT/test_attn.log")"
fi
P="--random d34 --device cuda --prefill 2048 --ctx none --batch none"
: >"$OUT/bench.txt"
for round in 1 2 3; do
    for bin in nanochat_base nanochat_attn nanochat; do
        [ -x $B/$bin ] || continue
        echo "$bin $(timeout 45 $B/$bin bench $P 2>&1 | grep '^prefill')" >>"$OUT/bench.txt"
    done
    [ $((SECONDS - t0)) -gt 150 ] && break
done
echo "bench: $((SECONDS - t0)) s"
NC_CUDA_PROFILE=1 timeout 30 $B/nanochat bench $P >"$OUT/profile_new.txt" 2>&1
[ -x $B/nanochat_base ] && NC_CUDA_PROFILE=1 timeout 30 $B/nanochat_base bench $P >"$OUT/profile_base.txt" 2>&1
echo "==== bench (prefill 2048: tok/s, ms)"; sort -s -k1,2 "$OUT/bench.txt"
echo "==== profile new";  grep -E "^  " "$OUT/profile_new.txt" 2>/dev/null
echo "==== profile base"; grep -E "^  " "$OUT/profile_base.txt" 2>/dev/null
echo "total $((SECONDS - t0)) s"
