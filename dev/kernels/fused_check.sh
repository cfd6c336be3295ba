#!/usr/bin/env bash
# dev/kernels/fused_check.sh: one lean device call for a decode-path change:
# test_cuda_backend with PDL on and off, then batch-1 and batched decode of
# the new build and of the parent commit's (.gpu-bin/nanochat_base), twice,
# interleaved, on the same card. Binaries prebuilt here and carried in
# .gpu-bin (see tools/gpu_check.sh).
set -u
OUT=${OUT:-/tmp/nc-gpu-out}; mkdir -p $OUT
export LD_LIBRARY_PATH="$PWD/.gpu-bin/libs"
B=.gpu-bin
for v in "NC_CUDA_PDL=1" "NC_CUDA_PDL=0"; do
  env $v timeout 120 $B/test_cuda_backend > $OUT/t.log 2>&1; echo "test $v rc=$? $(tail -1 $OUT/t.log)"; grep -m5 -E "FAIL|worst" $OUT/t.log
done
for r in 1 2; do for b in nanochat_base nanochat; do
  echo "## $b"; timeout 60 $B/$b bench --random d34 --device cuda --prefill 0 --ctx 128,1024 --batch 8,64,128 2>&1 | grep -E "^(decode|batch)"
done; done
