#!/usr/bin/env bash
# bench_llamacpp.sh: nanochat's CPU backend against llama.cpp on the same
# machine, same shapes and bytes (docs/performance.md, Baselines).
#
# llama.cpp: the source that the llama-cpp-python source distribution on
# PyPI vendors (pip download --no-binary :all:), its llama-bench and
# llama-quantize built with CMake (Release, GGML_NATIVE). The model: a
# random-weight llama-architecture GGUF with the sizes of nanochat's dNN
# (tools/make_llama_gguf.py, written with the `gguf` package from PyPI),
# bf16, plus q8_0 and q4_0 made with llama-quantize. nanochat runs
# `nanochat bench --random dNN` with each of WEIGHTS (bf16, and int8 against
# llama.cpp's q8_0: both one byte per weight plus a scale).
#
# Rounds interleave every engine and thread count (the machine may be
# shared); the summary is the median of the rounds per row, and the spread
# (min-max) says how noisy the machine was. Decode: llama-bench tg at depth
# 128 against bench's decode at context 128; prefill: pp512 against bench's
# prefill 512. llama.cpp loads its weights into memory (-lm none; on the
# 2-core dev VM its default mmap ran bf16 decode 8x slower), as nanochat
# copies checkpoints into memory.
#
# Everything slow is cached under LLAMACPP_CACHE (default
# ~/.cache/nanochat/llamacpp): the sdist, the build (~25 min on 2 busy
# cores, once), a venv with gguf, the GGUF files. Delete the folder to
# rebuild.
#
#   bash tools/bench_llamacpp.sh [ROUNDS]      (default 3)
# Environment: NANOCHAT (default build/nanochat), DEPTH (20), THREADS
# ("1 2"), WEIGHTS ("bf16 int8", nanochat's), QUANTS ("q8_0 q4_0"), LLAMACPP_PY_VERSION (0.3.36), RESULTS
# (a file for the raw rows; default $LLAMACPP_CACHE/results.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
CACHE=${LLAMACPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nanochat/llamacpp}
NANOCHAT=${NANOCHAT:-build/nanochat}
DEPTH=${DEPTH:-20}
THREADS=${THREADS:-1 2}
QUANTS=${QUANTS:-q8_0 q4_0}
WEIGHTS=${WEIGHTS:-bf16 int8}
VERSION=${LLAMACPP_PY_VERSION:-0.3.36}
RESULTS=${RESULTS:-$CACHE/results.tsv}
mkdir -p "$CACHE"
log() { echo "[bench_llamacpp] $*" >&2; }

build_llamacpp() {
    local bin=$CACHE/build/bin
    [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-quantize" ] && return
    local src=$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp
    if [ ! -f "$src/CMakeLists.txt" ]; then
        log "downloading llama-cpp-python $VERSION (source distribution) from PyPI"
        python3 -m pip download --no-binary :all: --no-deps -d "$CACHE" "llama-cpp-python==$VERSION" >&2
        tar xzf "$CACHE/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE"
    fi
    log "building llama-bench and llama-quantize (Release, native) in $CACHE/build; slow, once"
    cmake -S "$src" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
    cmake --build "$CACHE/build" --target llama-bench llama-quantize -j"$(nproc)" >&2
}

make_models() {
    local venv=$CACHE/venv bf16=$CACHE/d$DEPTH-bf16.gguf
    if [ ! -f "$bf16" ]; then
        if [ ! -x "$venv/bin/python" ]; then
            python3 -m venv "$venv"
            "$venv/bin/pip" install -q gguf numpy >&2
        fi
        "$venv/bin/python" tools/make_llama_gguf.py --depth "$DEPTH" --out "$bf16.tmp" >&2
        mv "$bf16.tmp" "$bf16"
    fi
    for q in $QUANTS; do
        [ -f "$CACHE/d$DEPTH-$q.gguf" ] || "$CACHE/build/bin/llama-quantize" "$bf16" "$CACHE/d$DEPTH-$q.gguf" "$q" \
            >"$CACHE/quantize-$q.log" 2>&1
    done
}

# llama-bench, one test: prints tokens/s.
llama() { # model threads test(pp|tg)
    local args=(-p 512 -n 0)
    [ "$3" = tg ] && args=(-p 0 -n 32 -d 128)
    "$CACHE/build/bin/llama-bench" -m "$1" -t "$2" -r 1 -lm none -o jsonl "${args[@]}" 2>/dev/null |
        python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["avg_ts"])'
}

# nanochat bench: prints "prefill decode floor_pct" (tokens/s, tokens/s, %).
nanochat() { # threads weights
    "$NANOCHAT" bench --random "d$DEPTH" --device cpu --threads "$1" --weights "$2" --prefill 512 --ctx 128 \
        --batch none --steps 32 --json | python3 -c '
import json, sys
r = {x["test"]: x for x in json.load(sys.stdin)["results"]}
print(r["prefill 512"]["tok_s"], r["decode ctx 128"]["tok_s"], r["decode ctx 128"]["floor_pct"])'
}

build_llamacpp
make_models
[ -x "$NANOCHAT" ] || { log "$NANOCHAT not found: run make first"; exit 1; }
log "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs; $(uptime | sed 's/.*load/load/')"
printf 'round\tthreads\tengine\ttest\ttok_s\n' >"$RESULTS"
for r in $(seq "$ROUNDS"); do
    for t in $THREADS; do
        for w in $WEIGHTS; do
            read -r pp tg pct < <(nanochat "$t" "$w")
            printf '%s\t%s\tnanochat %s\tdecode\t%s\n%s\t%s\tnanochat %s\tprefill\t%s\n%s\t%s\tnanochat %s\tfloor%%\t%s\n' \
                "$r" "$t" "$w" "$tg" "$r" "$t" "$w" "$pp" "$r" "$t" "$w" "$pct" >>"$RESULTS"
        done
        for q in bf16 $QUANTS; do
            m=$CACHE/d$DEPTH-$q.gguf
            printf '%s\t%s\tllama.cpp %s\tdecode\t%s\n' "$r" "$t" "$q" "$(llama "$m" "$t" tg)" >>"$RESULTS"
            printf '%s\t%s\tllama.cpp %s\tprefill\t%s\n' "$r" "$t" "$q" "$(llama "$m" "$t" pp)" >>"$RESULTS"
        done
        log "round $r, $t thread(s) done; $(uptime | sed 's/.*load/load/')"
    done
done
python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
with open(sys.argv[1]) as f:
    next(f)
    for line in f:
        _, t, engine, test, v = line.rstrip("\n").split("\t")
        rows[(engine, test, int(t))].append(float(v))
engines = sorted({e for e, _, _ in rows}, key=lambda e: (not e.startswith("nanochat"), e))
threads = sorted({t for _, _, t in rows})
for test in ("decode", "prefill"):
    print(f"\n{test} (tok/s, median of {max(len(v) for v in rows.values())} rounds [min-max])")
    print("| engine | " + " | ".join(f"{t} thread{'s' * (t > 1)}" for t in threads) + " |")
    print("|---|" + "---:|" * len(threads))
    for e in engines:
        cells = []
        for t in threads:
            v = rows.get((e, test, t))
            cells.append(f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]" if v else "-")
        print(f"| {e} | " + " | ".join(cells) + " |")
for e in engines:
    for t in threads:
        v = rows.get((e, "floor%", t))
        if v:
            print(f"{e} decode, {t} thread(s): {statistics.median(v):.1f}% of the honest floor (median)")
PY
