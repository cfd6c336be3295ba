#!/usr/bin/env bash
# dev/kernels/prefill_check.sh: one lean device call for a prefill change
# (stays under ~200 s): the prefill-attention harness (dev/kernels/
# attn_prefill.cu: every kernel variant against a CPU reference on long,
# windowed, GQA and ragged cases, and the kernel time of the d34 shape),
# test_cuda_backend, then the d34 prefill bench of the baseline build
# (nanochat_base, the parent commit), of the new build and of the new build
# with NC_CUDA_FA=v for each v in $ALT (other kernel variants; ALT empty:
# none), interleaved rounds on the same card, and one eager per-stage profile
# of the new and the base build. TEST_ALT: variants test_cuda_backend also
# runs with. Binaries are prebuilt here and carried in
# .gpu-bin-prefill (the device image lacks cjson, pcre2, microhttpd and
# libedit):
#   make -k BUILD=build-prefill3 -j2 CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a" \
#        build-prefill3/nanochat build-prefill3/tests/test_cuda_backend
#   cp build-prefill3/nanochat build-prefill3/tests/test_cuda_backend .gpu-bin-prefill/
#   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Isrc -DNC_WITH_CUDA \
#        -o .gpu-bin-prefill/attn_prefill dev/kernels/attn_prefill.cu
#   cp .gpu-bin/libs/* .gpu-bin-prefill/libs/
# Logs under $OUT, a short table last.
set -u
ALT=${ALT-1}
TEST_ALT=${TEST_ALT-}
OUT=${OUT:-/tmp/nc-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.gpu-bin-prefill/libs
B=.gpu-bin-prefill
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
if [ -x $B/attn_prefill ]; then
    timeout 80 $B/attn_prefill >"$OUT/harness.txt" 2>&1
    echo "harness: rc=$? ($((SECONDS - t0)) s)"
    cat "$OUT/harness.txt"
fi
timeout 100 $B/test_cuda_backend >"$OUT/test.log" 2>&1
echo "test_cuda_backend: rc=$? ($((SECONDS - t0)) s): $(tail -n 1 "$OUT/test.log")"
grep -E "worst|FAIL" "$OUT/test.log" | head -20
for v in $TEST_ALT; do
    NC_CUDA_FA=$v timeout 60 $B/test_cuda_backend >"$OUT/test_fa$v.log" 2>&1
    echo "test_cuda_backend NC_CUDA_FA=$v: rc=$? ($((SECONDS - t0)) s): $(tail -n 1 "$OUT/test_fa$v.log")"
done
P="--random d34 --device cuda --prefill 2048 --ctx none --batch none"
: >"$OUT/bench.txt"
for round in 1 2 3 4 5; do
    for bin in nanochat_base nanochat $(for v in $ALT; do echo nanochat-FA$v; done); do
        exe=${bin%-FA*}
        fa=; [ "$exe" != "$bin" ] && fa=${bin#*-FA}
        echo "$bin $(NC_CUDA_FA=$fa timeout 45 $B/$exe bench $P 2>&1 | grep '^prefill')" >>"$OUT/bench.txt"
    done
    [ $((SECONDS - t0)) -gt 145 ] && break
done
echo "bench: $((SECONDS - t0)) s"
if [ $((SECONDS - t0)) -lt 200 ]; then
    NC_CUDA_PROFILE=1 timeout 20 $B/nanochat bench $P >"$OUT/profile_new.txt" 2>&1
    [ $((SECONDS - t0)) -lt 180 ] &&
        NC_CUDA_PROFILE=1 timeout 20 $B/nanochat_base bench $P >"$OUT/profile_base.txt" 2>&1
fi
echo "==== bench (prefill 2048: tok/s, ms)"; sort -s -k1,2 "$OUT/bench.txt"
echo "==== profile new"; grep -E "^  " "$OUT/profile_new.txt" 2>/dev/null
echo "==== profile base"; grep -E "^  " "$OUT/profile_base.txt" 2>/dev/null
echo "total $((SECONDS - t0)) s"
