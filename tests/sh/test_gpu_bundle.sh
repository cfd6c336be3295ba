#!/usr/bin/env bash
# test_gpu_bundle.sh: `make gpu-bundle` makes a folder whose programs load
# none of this machine's non-system libraries from outside it:
#   - bin/ holds nanochat, every test program and every dev/kernels harness;
#   - under the bundle's `run`, every library each program loads (ldd) comes
#     from the bundle's lib/, except the C library family and CUDA's own,
#     which a GPU machine has; lib/ holds none of those;
#   - under `run`, test_sampler passes and nanochat answers --help;
#     `run` alone exits 2 and names the programs; BUNDLE.txt names the commit.
# Skipped without nvcc or on a CPU-only build (the bundle is for GPU machines).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
command -v "${NVCC:-nvcc}" >/dev/null 2>&1 || { echo "skipped: no nvcc"; exit 77; }
# A tree built with NVCC= (CPU only) has no CUDA objects to bundle.
grep -qa 'sm_[0-9]' "$BUILD/nanochat" 2>/dev/null || { echo "skipped: $BUILD/nanochat was built without CUDA"; exit 77; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

B=$TMP/bundle
if ! env -u MAKEFLAGS -u MFLAGS make -j2 BUILD="$BUILD" GPU_BUNDLE="$B" gpu-bundle >"$TMP/make.log" 2>&1; then
    tail -n 20 "$TMP/make.log"
    echo "FAIL: make gpu-bundle"
    exit 1
fi

expected="nanochat"
for t in tests/c/test_*.c; do expected+=" $(basename "$t" .c)"; done
for h in dev/kernels/*.cu; do expected+=" $(basename "$h" .cu)"; done
for p in $expected; do
    [ -x "$B/bin/$p" ] && ok || bad "bin/$p missing"
done

# What a GPU machine is sure to have (glibc, the compiler's runtime, CUDA).
system='^(linux-vdso|ld-linux.*|libc|libm|libmvec|libpthread|libdl|librt|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas.*)\.so'
for lib in "$B"/lib/*; do
    [[ $(basename "$lib") =~ $system ]] && bad "lib/ holds the system library $(basename "$lib")" || ok
done
for prog in "$B"/bin/*; do
    outside=$("$B/run" ldd "$prog" | awk '$2 == "=>" {print $1, $3}' | while read -r name path; do
        [[ $name =~ $system ]] || [[ $path == "$B/lib/"* ]] || echo "$name => $path"
    done)
    [ -z "$outside" ] && ok || bad "$(basename "$prog") loads from outside the bundle: $outside"
done

"$B/run" test_sampler >"$TMP/sampler.log" 2>&1 && ok || bad "run test_sampler: $(tail -n 1 "$TMP/sampler.log")"
"$B/run" nanochat --help | grep -q "^usage: nanochat" && ok || bad "run nanochat --help"
"$B/run" >"$TMP/usage.txt" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "test_cuda_backend" "$TMP/usage.txt" && ok || bad "run alone: exit $rc, $(cat "$TMP/usage.txt")"
grep -q "^commit: .*$(git rev-parse --short HEAD)" "$B/BUNDLE.txt" && ok || bad "BUNDLE.txt: $(head -n 1 "$B/BUNDLE.txt")"

echo "test_gpu_bundle: $((pass + fail)) checks, $fail failed"
[ $fail -eq 0 ]
