#!/usr/bin/env python3
"""test_python_example.py: python/examples/arithmetic_eval.py, the
evaluation loop in the style of nanochat's chat_eval.py, on the bundled
picochat and picochat's 26 held-out problems (arithmetic and letter
counting, tests/data/picochat/heldout.json), greedy.

References:
  - tests/data/picochat/golden.json: PyTorch's greedy transcripts of the
    same questions through nanochat's Engine rules (calculator forcing),
    made by tools/train_picochat.py. The test replays the evaluation loop on
    them: the prompt each problem renders to, the completion's tokens and
    masks (0 exactly where PyTorch's margin is null, i.e. forced), and the
    outcome, judged here by the problem's own answer (Python's eval);
  - with torch installed: the example again with --engine torch, nanochat's
    Engine written again in PyTorch (tools/nanochat_engine.py), which must
    give the same records (this part is reported as not run without torch).
Also: the example's --batched run (one generate_many) gives the same
records as its one-problem-at-a-time loop.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import Checker  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("NC_BUILD", os.path.join(ROOT, "build"))
LIB = os.environ.get("NANOCHAT_LIB", os.path.join(BUILD, "libnanochat.so"))  # a GPU bundle's on the device
EXAMPLE = os.path.join(ROOT, "python", "examples", "arithmetic_eval.py")
HELDOUT = os.path.join(ROOT, "tests", "data", "picochat", "heldout.json")
GOLDEN = json.load(open(os.path.join(ROOT, "tests", "data", "picochat", "golden.json")))["cases"]
TERMINAL = (4087, 4091)  # picochat's <|bos|>, <|assistant_end|>
CK = Checker("test_python_example")
check = CK.check


def run_example(*args):
    out = tempfile.mktemp(suffix=".json")
    env = dict(os.environ, NANOCHAT_LIB=LIB)
    env.pop("NANOCHAT_MODEL", None)
    p = subprocess.run([sys.executable, EXAMPLE, "--device", "cpu", "--problems-file", HELDOUT, "--json-out", out,
                        *args], capture_output=True, text=True, timeout=600, env=env)
    print(p.stdout.strip().splitlines()[-3:] if p.stdout else p.stderr[-2000:])
    if not check(p.returncode == 0, f"example {args}: exit {p.returncode}: {p.stderr[-2000:]}"):
        return None
    with open(out) as f:
        data = json.load(f)
    os.unlink(out)
    return data


def reference_records():
    """The loop replayed on PyTorch's transcripts, judged independently."""
    by_question = {c["messages"][-1]["content"]: c for c in GOLDEN if len(c["messages"]) == 1}
    held = json.load(open(HELDOUT))
    records = []
    for p in held["arithmetic"] + held["letters"]:
        case = by_question[p["question"]]
        truth = str(eval(p["expr"], {"__builtins__": {}}, {}))
        tokens = case["tokens"][:96]
        masks = [0 if m is None else 1 for m in case["margins"]][:len(tokens)]
        numbers = re.findall(r"-?\d+(?:\.\d+)?", case["text"])  # the reply's last number is its answer
        passed = int(bool(numbers) and numbers[-1] == truth)
        records.append({"question": p["question"], "prompt": case["prompt_ids"], "tokens": [tokens],
                        "masks": [masks], "passed": passed})
    return records


def same_records(got, want, what):
    check(len(got["problems"]) == len(want), f"{what}: {len(got['problems'])} problems, want {len(want)}")
    for g, w in zip(got["problems"], want):
        q = w["question"]
        check(g["question"] == q, f"{what}: problem order ({g['question']!r} vs {q!r})")
        check(g["prompt"] == w["prompt"], f"{what}: {q!r}: prompt differs")
        check(g["tokens"] == w["tokens"], f"{what}: {q!r}: tokens {g['tokens'][0][:10]}... vs {w['tokens'][0][:10]}...")
        check(g["masks"] == w["masks"], f"{what}: {q!r}: masks differ")
        check(g["passed"] == w["passed"], f"{what}: {q!r}: passed {g['passed']}, reference {w['passed']}")


def main():
    if not os.path.exists(LIB):
        print(f"no {LIB}: build it first (make)")
        return 1
    want = reference_records()
    ref_accuracy = sum(r["passed"] for r in want) / len(want)
    print(f"reference (PyTorch transcripts): {sum(r['passed'] for r in want)}/{len(want)}")
    check(ref_accuracy >= 0.9, f"the reference itself solves only {ref_accuracy:.0%}")

    seq = run_example()
    if seq:
        same_records(seq, want, "nanochat_c, one at a time")
        check(abs(seq["accuracy"] - ref_accuracy) < 1e-9, f"accuracy {seq['accuracy']} vs {ref_accuracy}")
        check(all(0 in m for r in seq["problems"] for m in r["masks"]), "a problem was answered without the tool")
        for r in seq["problems"]:
            check(not any(t in TERMINAL for t in r["tokens"][0]), "a terminal token inside a completion")
    batched = run_example("--batched")
    if seq and batched:
        check(batched["problems"] == seq["problems"], "--batched (generate_many) differs from the loop")

    try:
        import torch  # noqa: F401
    except ImportError:
        print("not run: --engine torch (torch is not installed)")
    else:
        ref = run_example("--engine", "torch")
        if seq and ref:
            same_records(ref, want, "torch Engine")
            check(ref["problems"] == seq["problems"], "--engine torch differs from nanochat_c")
        sampled = [run_example("--engine", e, "--num-samples", "4", "--temperature", "1.0")
                   for e in ("nanochat_c", "torch")]
        if all(sampled):
            print(f"sampled, 4 per problem: nanochat_c {sampled[0]['accuracy']:.2f}, torch {sampled[1]['accuracy']:.2f}")
            check(abs(sampled[0]["accuracy"] - sampled[1]["accuracy"]) <= 0.2, "sampled accuracies far apart")

    return CK.summary()


if __name__ == "__main__":
    sys.exit(main())
