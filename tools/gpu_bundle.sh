#!/usr/bin/env bash
# tools/gpu_bundle.sh: what `make gpu-bundle` runs. Copies built programs
# into one folder that runs on a GPU machine without this machine's
# development packages (cjson, pcre2, libmicrohttpd, libedit and what they
# pull in), together with the shared libraries they load:
#
#   DIR/bin/         the programs given (nanochat, tests, dev/kernels harnesses),
#                    without their debug information (symbols stay; the
#                    CUDA code, most of each program, is kept whole)
#   DIR/lib/         every library ldd shows them loading, except the C
#                    library family (libc, libm, libpthread, libdl, librt,
#                    libmvec, ld-linux, libgcc_s, libstdc++) and the CUDA
#                    driver and toolkit (libcuda, libcudart, libcublas*),
#                    which a GPU machine has in versions matching its driver
#   DIR/run          runs a program with DIR/bin first on PATH and DIR/lib on
#                    the library path: `DIR/run nanochat bench --random d34`,
#                    `DIR/run compute-sanitizer test_cuda_backend`
#   DIR/BUNDLE.txt   the commit, the date and the CUDA architectures built
#
# GPU_BASE_BIN=path adds that program as bin/nanochat_base (`make gpu-bundle
# GPU_BASE=<commit>` builds it from that commit and names the commit in
# GPU_BASE), so device scripts can time the old and the new build on the
# same card.
#
#   usage: [GPU_BASE_BIN=path GPU_BASE=commit] tools/gpu_bundle.sh DIR PROGRAM...
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: tools/gpu_bundle.sh DIR PROGRAM..." >&2; exit 2; }
dir=$1
shift
CUDA_ARCH=${CUDA_ARCH:-}

grep -qa 'sm_[0-9]' "$1" ||
    { echo "gpu_bundle: $1 has no CUDA code (built with NVCC= ?)" >&2; exit 1; }
rm -rf "$dir/bin" "$dir/lib"
mkdir -p "$dir/bin" "$dir/lib"
cp "$@" "$dir/bin/"

[ -z "${GPU_BASE_BIN:-}" ] || cp "$GPU_BASE_BIN" "$dir/bin/nanochat_base"
strip --strip-debug "$dir"/bin/*

# A library is carried unless a GPU machine is sure to have it (see above).
system_lib='^(linux-vdso|ld-linux.*|libc|libm|libmvec|libpthread|libdl|librt|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas.*)\.so'
for prog in "$dir"/bin/*; do
    ldd "$prog" | awk -v prog="$prog" '
        /=> not found/ { print "gpu_bundle: " prog " needs " $1 ", which is not installed here" > "/dev/stderr"; exit 1 }
        $2 == "=>" && $3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r name path; do
    [[ $name =~ $system_lib ]] || cp -L "$path" "$dir/lib/$name"
done

cat >"$dir/run" <<'EOF'
#!/bin/sh
# Runs PROGRAM (one of bin/, or any command, e.g. compute-sanitizer) with this
# bundle's programs first on PATH and its libraries on the library path.
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -eq 0 ]; then
    echo "usage: $0 PROGRAM [ARGS...]; programs: $(ls "$here/bin" | tr '\n' ' ')" >&2
    exit 2
fi
PATH="$here/bin:$PATH"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH LD_LIBRARY_PATH
exec "$@"
EOF
chmod +x "$dir/run"

base=""
[ -z "${GPU_BASE_BIN:-}" ] ||
    base=" (nanochat_base: $(git rev-parse --short "${GPU_BASE:-}" 2>/dev/null || echo "$GPU_BASE_BIN"))"
archs=$(grep -aoE '\bsm_[0-9]+a?\b' "$dir/bin/nanochat" | sort -u | tr '\n' ' ')
{
    echo "commit:  $(git describe --always --dirty 2>/dev/null || echo unknown)$base"
    echo "built:   $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n)"
    echo "cuda:    code for ${archs:-?}(CUDA_ARCH=${CUDA_ARCH:-default})"
} >"$dir/BUNDLE.txt"
cat "$dir/BUNDLE.txt"
echo "gpu_bundle: $(ls "$dir/bin" | wc -l) programs, $(ls "$dir/lib" | wc -l) libraries, $(du -sh "$dir" | cut -f1) in $dir"
