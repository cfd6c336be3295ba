#!/usr/bin/env python3
"""test_picochat_e2e.py: the bundled default model, end to end through the
real CLI (`nanochat chat -p ... --json --temperature 0`), on the CPU.

References (none of them our own engine's output):
  - tests/data/picochat/golden.json: greedy transcripts of the held questions
    made by PyTorch from the same weights in fp32 on the CPU, with nanochat's
    calculator forcing (tools/train_picochat.py --golden). Tokens must be
    equal; a difference is accepted only where PyTorch's top-2 logit margin
    at that step is below TIE (a reference near-tie), and the rest of that
    transcript is then not compared.
  - tests/data/picochat/heldout.json: arithmetic and letter-counting problems
    that were excluded from training (tools/training_data/conversations.py).
    Truth comes from Python's own eval of the problem; the answer must come
    through the tool path (<|python_start|> expr <|python_end|> then the
    forced <|output_start|> result <|output_end|> in the JSON tokens) and the
    final sentence must state the result. At least 90% of each set must pass,
    and the README's "What is 123 * 45?" (5535) must.
  - the model's own files: at most 16 MB in all (issue 6), and `chat` without
    -m must pick this model.
Token ids are decoded with tiktoken from the model's tokenizer.pkl.
"""
import json
import math
import os
import pickle
import re
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("NC_BIN", os.path.join(ROOT, "build", "nanochat"))
MODEL = os.path.join(ROOT, "models", "picochat")
DATA = os.path.join(ROOT, "tests", "data", "picochat")
TIE = 1e-3            # fp32 engines differ by ~1e-5 in logits; margins below this are ties
MAX_MODEL_BYTES = 16 * 1000 * 1000
PASS_FRACTION = 0.9   # issue 6: at least 9 of 10 held-out problems


def run_chat(messages, max_tokens, model_args=("-m", MODEL), cwd=ROOT):
    """The CLI's greedy reply: (tokens without the terminal one, finish, json)."""
    args = [BIN, "chat", *model_args, "--json", "--temperature", "0", "--max-tokens", str(max_tokens)]
    msgs = list(messages)
    if msgs[0]["role"] == "system":
        args += ["--system", msgs.pop(0)["content"]]
    assert len(msgs) == 1 and msgs[0]["role"] == "user", "the CLI takes one user message"
    args += ["-p", msgs[0]["content"]]
    env = dict(os.environ)
    env.pop("NANOCHAT_MODEL", None)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    return out["tokens"], out["finish_reason"], out


class Specials:
    def __init__(self, enc):
        sp = enc._special_tokens
        self.terminal = {sp["<|assistant_end|>"], sp["<|bos|>"]}
        self.py_start, self.py_end = sp["<|python_start|>"], sp["<|python_end|>"]
        self.out_start, self.out_end = sp["<|output_start|>"], sp["<|output_end|>"]


def strip_terminal(tokens, finish, sp):
    if finish == "stop" and tokens and tokens[-1] in sp.terminal:
        return tokens[:-1]
    return tokens


def tool_path(enc, sp, tokens):
    """(expression, forced output, text after it) of the last tool call in
    `tokens`, or None if there is no complete call with output."""
    try:
        s = len(tokens) - 1 - tokens[::-1].index(sp.py_start)
        e = tokens.index(sp.py_end, s)
        if tokens[e + 1] != sp.out_start:
            return None
        oe = tokens.index(sp.out_end, e + 1)
    except (ValueError, IndexError):
        return None
    tail = [t for t in tokens[oe + 1:] if t < sp.py_start and t not in sp.terminal]
    return (enc.decode(tokens[s + 1:e]), enc.decode(tokens[e + 2:oe]), enc.decode(tail))


def python_value(expr):
    """Python's own answer for a held-out problem (the test's reference)."""
    return str(eval(expr, {"__builtins__": {}}, {}))


def main():
    if not os.access(BIN, os.X_OK):
        print(f"no binary at {BIN}: build it first (make)")
        return 1
    failures = []

    # ---- the shipped files
    files = sorted(os.listdir(MODEL))
    total = sum(os.path.getsize(os.path.join(MODEL, f)) for f in files)
    print(f"models/picochat: {len(files)} files, {total} bytes")
    if total > MAX_MODEL_BYTES:
        failures.append(f"models/picochat is {total} bytes > {MAX_MODEL_BYTES}")
    with open(os.path.join(MODEL, "tokenizer.pkl"), "rb") as f:
        enc = pickle.load(f)
    sp = Specials(enc)
    with open(os.path.join(DATA, "golden.json")) as f:
        golden = json.load(f)
    with open(os.path.join(DATA, "heldout.json")) as f:
        held = json.load(f)
    model_files = [f for f in files if f.startswith(("model_", "meta_"))]
    if not set(model_files) <= set(golden["model_files"]):
        failures.append(f"golden.json was made for {golden['model_files']}, models/picochat has {files}")

    # ---- golden transcripts: same tokens as PyTorch
    replies = {}
    ties = 0
    for case in golden["cases"]:
        try:
            tokens, finish, out = run_chat(case["messages"], case["max_tokens"])
        except Exception as e:  # noqa: BLE001 (report every case)
            failures.append(f"{case['name']}: {e}")
            continue
        tokens = strip_terminal(tokens, finish, sp)
        replies[case["name"]] = (tokens, out)
        want = case["tokens"]
        if tokens == want and finish == case["finish_reason"]:
            continue
        i = next((k for k in range(min(len(tokens), len(want))) if tokens[k] != want[k]),
                 min(len(tokens), len(want)))
        margin = case["margins"][i] if i < len(case["margins"]) else None
        if margin is not None and margin < TIE:
            ties += 1
            print(f"{case['name']}: differs at token {i} where PyTorch had a near-tie ({margin:.2e}): accepted")
            continue
        failures.append(f"{case['name']}: first difference at token {i} (PyTorch margin {margin}): "
                        f"got {tokens[i:i + 8]}... ({finish}) want {want[i:i + 8]}... ({case['finish_reason']})\n"
                        f"    got  {enc.decode(tokens)!r}\n    want {enc.decode(want)!r}")
    print(f"golden: {len(golden['cases'])} cases, {ties} near-ties")

    # ---- held-out problems through the tool path
    by_question = {c["messages"][-1]["content"]: c["name"] for c in golden["cases"]
                   if len(c["messages"]) == 1}
    for kind in ("arithmetic", "letters"):
        probs = held[kind]
        ok = 0
        for p in probs:
            truth = python_value(p["expr"])
            name = by_question.get(p["question"])
            if name in replies:
                tokens = replies[name][0]
            else:
                tokens, finish, _ = run_chat([{"role": "user", "content": p["question"]}], 96)
                tokens = strip_terminal(tokens, finish, sp)
            call = tool_path(enc, sp, tokens)
            if call is None:
                verdict = f"no tool call in {enc.decode(tokens)!r}"
            elif call[1] != truth:
                verdict = f"tool output {call[1]!r} for {call[0]!r}, Python says {truth!r}"
            elif not re.search(r"(?<![\d.])" + re.escape(truth) + r"(?![\d])", call[2]):
                verdict = f"final text {call[2]!r} does not state {truth}"
            else:
                verdict = "ok"
                ok += 1
            print(f"  {kind}: {p['question']!r} -> {verdict}")
            if p["question"] == "What is 123 * 45?" and verdict != "ok":
                failures.append(f"README example 123 * 45: {verdict}")
        need = math.ceil(PASS_FRACTION * len(probs))
        print(f"{kind}: {ok}/{len(probs)} held-out problems right through the tool (need {need})")
        if ok < need:
            failures.append(f"{kind}: only {ok}/{len(probs)} held-out problems right")

    # ---- no -m: the bundled model is the default, wherever we run from
    hello = next(c for c in golden["cases"] if c["name"] == "hello")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            tokens, finish, _ = run_chat(hello["messages"], hello["max_tokens"], model_args=(), cwd=tmp)
            if strip_terminal(tokens, finish, sp) != hello["tokens"]:
                failures.append(f"chat without -m: got {enc.decode(tokens)!r}, not picochat's golden reply")
        except Exception as e:  # noqa: BLE001
            failures.append(f"chat without -m: {e}")

    for f in failures:
        print("FAIL:", f)
    print(f"test_picochat_e2e: {'FAILED' if failures else 'passed'} ({len(failures)} failures)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
