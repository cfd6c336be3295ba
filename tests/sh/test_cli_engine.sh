#!/usr/bin/env bash
# test_cli_engine.sh: `nanochat generate` and `nanochat chat` from the
# outside.
#   - bad flags, out-of-range values, a missing model: exit 1..127, one
#     line on stderr naming the problem, nothing on stdout;
#   - greedy `generate --json` / `chat -p --json` tokens equal PyTorch's
#     greedy continuation (tests/data/generate/v1_greedy.json, made by
#     tools/make_generate_fixtures.py from transformers' NanoChat model);
#   - -n N gives N choices, each the greedy continuation at temperature 0;
#   - a conversation beyond the context is refused naming the limit, and
#     --truncate keeps it going; later turns reuse the cached prefix.
# Runs on the tiny checkpoint tests/data/ckpt/v1 (context 256), one thread.
. "$(dirname "$0")/lib.sh"
MODEL=tests/data/ckpt/v1
FIX=tests/data/generate/v1_greedy.json
require_bin

M=(-m "$MODEL" --threads 1)
for cmd in generate chat; do
    P=(-p hi)
    expect_cli_error "$cmd unknown flag" "--bogus" $cmd "${M[@]}" "${P[@]}" --bogus
    expect_cli_error "$cmd temperature<0" "--temperature" $cmd "${M[@]}" "${P[@]}" --temperature -1
    expect_cli_error "$cmd temperature nan" "--temperature" $cmd "${M[@]}" "${P[@]}" --temperature nan
    expect_cli_error "$cmd temperature text" "--temperature" $cmd "${M[@]}" "${P[@]}" --temperature warm
    expect_cli_error "$cmd temperature big" "--temperature" $cmd "${M[@]}" "${P[@]}" --temperature 11
    expect_cli_error "$cmd top-k<0" "--top-k" $cmd "${M[@]}" "${P[@]}" --top-k -3
    expect_cli_error "$cmd top-p 0" "--top-p" $cmd "${M[@]}" "${P[@]}" --top-p 0
    expect_cli_error "$cmd top-p>1" "--top-p" $cmd "${M[@]}" "${P[@]}" --top-p 1.5
    expect_cli_error "$cmd min-p>1" "--min-p" $cmd "${M[@]}" "${P[@]}" --min-p 2
    expect_cli_error "$cmd n 0" "-n" $cmd "${M[@]}" "${P[@]}" -n 0
    expect_cli_error "$cmd n 1000" "-n" $cmd "${M[@]}" "${P[@]}" -n 1000
    expect_cli_error "$cmd max-tokens 0" "--max-tokens" $cmd "${M[@]}" "${P[@]}" --max-tokens 0
    expect_cli_error "$cmd seed -1" "--seed" $cmd "${M[@]}" "${P[@]}" --seed -1
    expect_cli_error "$cmd missing value" "needs a value" $cmd "${M[@]}" "${P[@]}" --max-tokens
    expect_cli_error "$cmd threads" "--threads" $cmd -m "$MODEL" --threads many "${P[@]}"
    expect_cli_error "$cmd no such model" "does-not-exist" $cmd -m "$TMP/does-not-exist" "${P[@]}"
    expect_cli_error "$cmd bad device" "--device" $cmd "${M[@]}" "${P[@]}" --device tpu
    "$BIN" $cmd --help >"$TMP/out" 2>&1 && grep -q "usage: nanochat $cmd" "$TMP/out" && ok || bad "$cmd --help"
done
expect_cli_error "generate without prompt" "-p TEXT" generate "${M[@]}"
expect_cli_error "generate both prompts" "-p TEXT" generate "${M[@]}" -p hi --ids "1 2"
expect_cli_error "generate bad ids" "--ids" generate "${M[@]}" --ids "1 x 2"
expect_cli_error "generate id out of vocab" "vocabulary" generate "${M[@]}" --ids "1 70000"
expect_cli_error "chat json without -p" "--json needs -p" chat "${M[@]}" --json
expect_cli_error "chat empty -p" "non-empty" chat "${M[@]}" -p ""
long=$(python3 -c 'print("word " * 300)')
expect_cli_error "chat beyond context" "context limit of 256 tokens" chat "${M[@]}" -p "$long"
expect_cli_error "generate beyond context" "context limit of 256" generate "${M[@]}" -p "$long"

# ---- greedy tokens equal PyTorch's ----
python3 - "$BIN" "$MODEL" "$FIX" <<'EOF' && ok || bad "greedy continuations differ from PyTorch"
import json, subprocess, sys
binary, model, fix = sys.argv[1:4]
bad = 0
for c in json.load(open(fix))["cases"]:
    args = [binary, c["mode"], "-m", model, "--threads", "1", "-p", c["text"], "-t", "0",
            "--max-tokens", str(c["max_tokens"]), "--json"]
    if c.get("system"):
        args += ["--system", c["system"]]
    r = subprocess.run(args, capture_output=True, text=True)
    try:
        j = json.loads(r.stdout)
    except ValueError:
        print(f"{c['mode']} {c['text']!r}: not JSON (exit {r.returncode}): {r.stdout[:200]!r} {r.stderr[:200]!r}")
        bad += 1
        continue
    problems = []
    if j["tokens"] != c["tokens"]:
        problems.append(f"tokens {j['tokens']} != {c['tokens']}")
    if j["finish_reason"] != c["finish_reason"]:
        problems.append(f"finish {j['finish_reason']} != {c['finish_reason']}")
    if j["usage"]["prompt_tokens"] != len(c["prompt"]):
        problems.append(f"prompt tokens {j['usage']['prompt_tokens']} != {len(c['prompt'])}")
    if not isinstance(j["text"], str):
        problems.append("text is not a string")
    for p in problems:
        print(f"{c['mode']} {c['text']!r}: {p}")
    bad += bool(problems)
    # -n 3 at temperature 0: three identical greedy choices
    if c["mode"] == "generate" and c["text"] == "Hello world":
        r = subprocess.run(args + ["-n", "3"], capture_output=True, text=True)
        j = json.loads(r.stdout)
        if len(j["choices"]) != 3 or any(ch["tokens"] != c["tokens"] for ch in j["choices"]):
            print("-n 3 greedy choices differ")
            bad += 1
sys.exit(1 if bad else 0)
EOF

# ---- sampling: reproducible with a seed, different across seeds ----
a=$("$BIN" generate "${M[@]}" -p "Hello" --seed 7 --max-tokens 30 --json)
b=$("$BIN" generate "${M[@]}" -p "Hello" --seed 7 --max-tokens 30 --json)
c=$("$BIN" generate "${M[@]}" -p "Hello" --seed 8 --max-tokens 30 --json)
[ "$a" = "$b" ] && ok || bad "same seed, different output"
[ "$a" != "$c" ] && ok || bad "different seeds, same output"

# ---- multi-turn chat from stdin: prefix reuse, refusal, --truncate ----
msg=$(python3 -c 'print("tell me more " * 4)')   # 57 tokens a turn + a 21-token reply
printf '%s\n%s\n%s\n%s\n' "$msg" "$msg" "$msg" "$msg" >"$TMP/turns"
"$BIN" chat "${M[@]}" -t 0 --max-tokens 20 --verbose <"$TMP/turns" >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -ne 0 ] && ok || bad "a conversation outgrowing the context should fail (exit $rc)"
grep -q "context limit of 256 tokens" "$TMP/err" && ok || bad "refusal names the limit: $(cat "$TMP/err")"
grep -q "prefill: [0-9]* tokens ([1-9][0-9]* cached)" "$TMP/err" && ok || bad "later turns reuse the cache: $(grep prefill "$TMP/err")"
"$BIN" chat "${M[@]}" -t 0 --max-tokens 20 --truncate <"$TMP/turns" >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 0 ] && [ "$(wc -l <"$TMP/out")" -eq 4 ] && ok || bad "--truncate: exit $rc, $(wc -l <"$TMP/out") replies: $(cat "$TMP/err")"

finish test_cli_engine
