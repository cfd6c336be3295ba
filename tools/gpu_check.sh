#!/usr/bin/env bash
# tools/gpu_check.sh: everything one CUDA change needs, in one device call:
# build (sm_90a only, to save time), the GPU test, compute-sanitizer on the
# quick test, `nanochat bench` on d34 shapes and the PyTorch baselines.
# Logs go to $OUT (the device tool brings them back); a short table last.
#   usage: bash tools/gpu_check.sh [all|test|bench]   (default all)
set -u
OUT=${OUT:-/tmp/nc-gpu-out}
mkdir -p "$OUT"
what=${1:-all}
B=build-gpu
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
if [ -x .gpu-bin/nanochat ]; then
    # Prebuilt here and carried (the device image lacks cjson, pcre2,
    # microhttpd and libedit): binaries plus their libraries.
    B=.gpu-bin
    export LD_LIBRARY_PATH="$PWD/.gpu-bin/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "using prebuilt binaries in $B"
else
    t0=$SECONDS
    # -k: a teammate's half-written test elsewhere in the tree must not stop ours
    make -k BUILD=$B -j16 CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a" $B/nanochat $B/tests/test_cuda_backend \
        >"$OUT/build.log" 2>&1
    [ -x $B/nanochat ] && [ -x $B/tests/test_cuda_backend ] || { grep -m 30 -E "error" "$OUT/build.log"; exit 1; }
    mkdir -p $B/tests && nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -o $B/gemv_harness dev/kernels/gemv.cu
    echo "build: $((SECONDS - t0)) s"
fi
T=$B/test_cuda_backend
[ -x $T ] || T=$B/tests/test_cuda_backend
summary=()
if [ "$what" = all ] || [ "$what" = test ]; then
    t0=$SECONDS
    timeout 240 $T >"$OUT/test.log" 2>&1
    rc=$?
    summary+=("test_cuda_backend: rc=$rc ($((SECONDS - t0)) s): $(tail -n 1 "$OUT/test.log")")
    grep -E "worst|matched|FAIL" "$OUT/test.log" | head -40
    for v in "NC_CUDA_PDL=0" "NC_CUDA_GRAPHS=0"; do
        env $v timeout 120 $T >"$OUT/test_variant.log" 2>&1
        summary+=("test_cuda_backend with $v: rc=$? $(tail -n 1 "$OUT/test_variant.log")")
        grep -m 5 FAIL "$OUT/test_variant.log"
    done
    t0=$SECONDS
    NC_CUDA_TEST_QUICK=1 timeout 300 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
        $T >"$OUT/sanitizer.log" 2>&1
    rc=$?
    summary+=("compute-sanitizer memcheck: rc=$rc ($((SECONDS - t0)) s): $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)")
    grep -m 20 -E "Invalid|out of bounds|Error|FAIL" "$OUT/sanitizer.log"
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
    timeout 60 $B/gemv_harness >"$OUT/gemv.txt" 2>&1
    t0=$SECONDS
    timeout 240 $B/nanochat bench --random d34 --device cuda ${BENCH_ARGS:-} >"$OUT/bench.txt" 2>&1
    summary+=("bench: rc=$? ($((SECONDS - t0)) s)")
    : >"$OUT/bench_sweep.txt"
    for v in "NC_CUDA_PDL=0"; do
        echo "## $v" >>"$OUT/bench_sweep.txt"
        env $v timeout 60 $B/nanochat bench --random d34 --device cuda --prefill 0 --ctx 128,1024 --batch 4,32,128 \
            --steps 48 2>&1 | grep -E "^decode|^batch" >>"$OUT/bench_sweep.txt"
    done
    for args in "--prefill 2048 --ctx none --batch none" "--prefill 0 --ctx 1024 --batch none --steps 16" \
                "--prefill 0 --ctx none --batch 128 --batch-steps 8"; do
        echo "## NC_CUDA_PROFILE=1 bench $args" >>"$OUT/profile.txt"
        NC_CUDA_PROFILE=1 timeout 60 $B/nanochat bench --random d34 --device cuda $args >>"$OUT/profile.txt" 2>&1
    done
    echo "==== sweep"; cat "$OUT/bench_sweep.txt"
    echo "==== profile"; grep -v "^device\|^model\|^bandwidth\|^$\|^test" "$OUT/profile.txt"
    [ -z "${NO_PYTORCH:-}" ] && { echo "==== pytorch"; grep -v "^JSON" "$OUT/pytorch.txt" | tail -20; }
fi
echo "==== summary"
printf '%s\n' "${summary[@]}"
