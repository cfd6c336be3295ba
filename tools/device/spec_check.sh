#!/usr/bin/env bash
# tools/device/spec_check.sh: speculative decoding on the GPU in one device
# call, under BUDGET (default 570 s; docs/speculative.md, Measurements):
#   0. test_cuda_backend with NC_CUDA_VERIFY_ROWS=0 (verified chunks as
#      prefill chunks, the fallback; the default, decode rows, runs in every
#      test_cuda_backend call): the fixtures' short chunks against PyTorch;
#   1. test_spec_picochat with NC_TEST_DEVICE=cuda, with verified chunks as
#      decode rows (the default) and as prefill chunks
#      (NC_CUDA_VERIFY_ROWS=0): the golden conversations greedy, without
#      speculation and with prompt lookup, picochat drafting for itself, its
#      first two layers as a draft, models/picochat-draft and lookup with the
#      cut draft; each must equal the run without speculation up to that
#      run's own near-ties (the GPU's one-row GEMV and k-row GEMM round bf16
#      differently); prints the acceptance of each mode;
#      and both test programs with NC_CUDA_VERIFY_PAIRS=on (every verified
#      chunk's rows paired in decode attention, not only where it pays);
#   2. compute-sanitizer memcheck on it (the first 4 conversations, default);
#   3. `nanochat bench` on d34 shapes: the cost of verifying k = 1, 2, 4, 8
#      drafts against a decode step, at 128 and 1024 tokens of context, with
#      NC_CUDA_VERIFY_ROWS 0 and 1 (issue 20's target: k = 4 at most 1.15x);
#      again at the end if time is left;
#   4. tools/spec_bench.py on the card: decode speed with and without
#      prompt lookup for d34 shapes with nothing to propose (the cost when
#      it cannot help, target <= 2%), and picochat's golden chats and
#      quoting chats (the same question twice) in every mode, with
#      models/picochat-draft as the draft;
# then the tables, and an estimate of prompt lookup's speed-up for a d34 on
# quoting chats: picochat's tokens per verifying step there (the same
# tokens whatever the model's size) over d34's cost of verifying that many.
#   usage: [BUDGET=570] [ROUNDS=3] bash tools/device/spec_check.sh
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}

# verified chunks as prefill chunks (NC_CUDA_VERIFY_ROWS=0, the fallback of the decode rows):
# the fixtures' chunks of 3, 7 and 12 and the device-sampled verified chunk against the CPU
step test_cuda_backend_prefill_verify 150 env NC_CUDA_VERIFY_ROWS=0 test_cuda_backend
step spec_gpu_equality 150 env NC_TEST_DEVICE=cuda test_spec_picochat
step spec_gpu_equality_pairs_on 150 env NC_CUDA_VERIFY_PAIRS=on NC_TEST_DEVICE=cuda test_spec_picochat
step test_cuda_backend_pairs_on 150 env NC_CUDA_VERIFY_PAIRS=on test_cuda_backend
step spec_gpu_equality_prefill_verify 150 env NC_CUDA_VERIFY_ROWS=0 NC_TEST_DEVICE=cuda test_spec_picochat
step spec_sanitizer 150 env NC_TEST_DEVICE=cuda NC_TEST_CASES=4 \
    compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 test_spec_picochat
verify() { # round
    for rows in 0 1; do
        for ctx in 128 1024; do
            step "verify_d34_rows${rows}_ctx${ctx}_$1" 75 env NC_CUDA_VERIFY_ROWS=$rows nanochat bench --random d34 \
                --device cuda --prefill 0 --ctx none --batch none --verify 1,2,4,8 --verify-ctx "$ctx" --steps 32 --json
        done
    done
}
verify 1
step spec_bench_d34_nothing 150 python3 tools/spec_bench.py --device cuda --random d34 --scenarios nothing \
    --modes lookup --nothing-tokens 256 --rounds 2 --json "$OUT/spec_bench_d34.json"
step spec_bench_picochat 200 python3 tools/spec_bench.py --device cuda --model models/picochat \
    --draft models/picochat-draft --scenarios chat,quote --rounds "$ROUNDS" --json "$OUT/spec_bench_picochat.json"
[ "$(left)" -gt 120 ] && verify 2

for f in spec_gpu_equality spec_gpu_equality_verify_rows; do
    echo "==== equality on the GPU ($f)"
    grep -E "tokens per verifying step|near-tie|conversations|FAIL" "$OUT/$f.log"
done
echo "==== verifying k drafts on d34 shapes (ms per step; x a decode step at that context)"
python3 - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
for path in sorted(glob.glob(os.path.join(out, "verify_d34_*.log"))):
    try:
        res = json.loads(open(path).read().strip().splitlines()[-1])["results"]
    except (ValueError, IndexError, KeyError):
        print(f"{os.path.basename(path)}: no result")
        continue
    print(f"{os.path.basename(path)[:-4]:24s} " + "  ".join(f"{r['test'].split(' ctx')[0]}: {r['ms']:.3f} ms "
                                                          f"x{r['x_decode']:.3f}" for r in res))
EOF
for f in spec_bench_d34_nothing spec_bench_picochat; do
    echo "==== $f"
    grep -E "^====|^  " "$OUT/$f.log"
done
echo "==== estimate: prompt lookup on quoting chats, d34 shapes"
python3 - "$OUT" <<'EOF'
import glob, json, os, re, sys
out = sys.argv[1]
try:
    bench = json.load(open(os.path.join(out, "spec_bench_picochat.json")))["results"]
except (OSError, ValueError):
    sys.exit(print("no spec_bench_picochat.json"))
row = next((r for r in bench if r["scenario"] == "quote" and r["mode"] == "lookup-always"), None)
m = row and re.match(r"([0-9.]+) tokens per verifying step", row["speculation"])
cost = {}
for path in glob.glob(os.path.join(out, "verify_d34_rows*_ctx1024_*.log")):
    try:
        for r in json.loads(open(path).read().strip().splitlines()[-1])["results"]:
            k = int(r["test"].split()[1])
            cost[k] = min(cost.get(k, 9e9), r["x_decode"])
    except (ValueError, IndexError, KeyError):
        pass
if not m or 8 not in cost:
    sys.exit(print("missing inputs (quote lookup-always row, or verify 8 at ctx 1024)"))
tps = float(m.group(1))
print(f"picochat quoting chats, lookup verifying up to 8 drafts: {tps:.2f} tokens per verifying step; "
      f"d34 verifying 8 drafts costs x{cost[8]:.3f} a decode step -> about {tps / cost[8]:.2f}x plain decode "
      f"on the steps that verify (issue 20's target: 1.8x)")
EOF
summary
