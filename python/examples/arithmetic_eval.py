#!/usr/bin/env python3
"""arithmetic_eval.py: a small evaluation in the style of nanochat's
scripts/chat_eval.py (run_generative_eval): arithmetic questions, answered
by the model through the calculator tool, accuracy reported.

Each problem is a conversation as nanochat's tasks make them (the user's
question, the assistant's reference answer with its tool call); the prompt
is render_for_completion of it, the engine samples num_samples completions
with generate_batch, a problem passes when any completion's final text
states the right result (Python's own eval of the expression).

    python3 python/examples/arithmetic_eval.py                      # picochat, nanochat_c
    python3 python/examples/arithmetic_eval.py --batched            # all prompts in one generate_many
    python3 python/examples/arithmetic_eval.py --engine torch       # nanochat's Engine in PyTorch
    python3 python/examples/arithmetic_eval.py -m hf:OWNER/NAME --device cuda --problems 200

--engine torch runs the same loop through nanochat's Engine written again
in PyTorch (tools/nanochat_engine.py, on picochat's V1 model; needs torch):
at temperature 0 both give the same completions.
"""
import argparse
import json
import os
import random
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class ArithmeticTask:
    """Problems {"question", "expr", "result"} as nanochat conversations."""

    def __init__(self, problems):
        self.problems = problems

    def __len__(self):
        return len(self.problems)

    def __getitem__(self, i):
        p = self.problems[i]
        answer = [{"type": "python", "text": p["expr"]}, {"type": "python_output", "text": p["result"]},
                  {"type": "text", "text": f"The answer is {p['result']}."}]
        return {"messages": [{"role": "user", "content": p["question"]}, {"role": "assistant", "content": answer}],
                "result": p["result"]}

    def evaluate(self, conversation, completion):
        """1 if the completion's last number, after its last tool output, is the result."""
        final = completion.rsplit("<|output_end|>", 1)[-1]
        numbers = NUMBER.findall(final)
        return int(bool(numbers) and numbers[-1] == conversation["result"])


def make_problems(n, seed):
    """n questions like "What is 123 * 45?" with Python's answer."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        op = rng.choice("+-*/")
        a, b = rng.randint(1, 999), rng.randint(1, 99)
        expr = f"{a}{op}{b}"
        out.append({"question": f"What is {a} {op} {b}?", "expr": expr,
                    "result": str(eval(expr, {"__builtins__": {}}, {}))})
    return out


def load_problems(path):
    """A JSON list of problems, or an object whose lists hold them (tests/data/picochat/heldout.json)."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        data = [p for v in data.values() if isinstance(v, list) for p in v if isinstance(p, dict) and "expr" in p]
    return [{"question": p["question"], "expr": p["expr"],
             "result": p.get("result") or str(eval(p["expr"], {"__builtins__": {}}, {}))} for p in data]


def make_engine(args):
    """(engine, render_for_completion, decode) for --engine."""
    if args.engine == "nanochat_c":
        sys.path.insert(0, os.path.join(REPO, "python"))  # running from the source tree without installing
        import nanochat_c
        engine = nanochat_c.load(args.model, device=args.device, max_batch=args.max_batch)
        return engine, engine.tokenizer.render_for_completion, engine.tokenizer.decode
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import nanochat_engine
    import picochat_model
    engine, tok = nanochat_engine.load_checkpoint(args.model or os.path.join(REPO, "models", "picochat"),
                                                  device="cpu" if args.device == "auto" else args.device)

    def render(conversation):
        return picochat_model.render_for_completion(tok.enc, conversation["messages"][:-1])
    return engine, render, tok.decode


def run_generative_eval(task, engine, render, decode, args):
    """nanochat's loop: one problem at a time, generate_batch, any sample right passes."""
    records = []
    for i in range(len(task)):
        conversation = task[i]
        prompt = render(conversation)
        results, masks = engine.generate_batch(prompt, num_samples=args.num_samples, max_tokens=args.max_new_tokens,
                                               temperature=args.temperature, top_k=args.top_k, seed=args.seed)
        records.append(record(task, conversation, prompt, [r[len(prompt):] for r in results],
                              [m[len(prompt):] for m in masks], decode))
        passed = sum(r["passed"] for r in records)
        print(f"\r\033[K{passed}/{len(records)} ({100 * passed / len(records):.2f}%)", end="", flush=True)
    print()
    return records


def run_batched_eval(task, engine, render, decode, args):
    """Every problem at once through generate_many (nanochat_c only)."""
    conversations = [task[i] for i in range(len(task))]
    prompts = [render(c) for c in conversations]
    out = engine.generate_many(prompts, num_samples=args.num_samples, max_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    return [record(task, c, p, [s.tokens for s in samples], [s.masks for s in samples], decode)
            for c, p, samples in zip(conversations, prompts, out)]


def record(task, conversation, prompt, tokens, masks, decode):
    completions = [decode(t) for t in tokens]
    outcomes = [task.evaluate(conversation, c) for c in completions]
    return {"question": conversation["messages"][0]["content"], "result": conversation["result"], "prompt": prompt,
            "tokens": tokens, "masks": masks, "completions": completions, "outcomes": outcomes,
            "passed": int(any(outcomes)), "used_tool": [int(0 in m) for m in masks]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", help="checkpoint folder or hf:OWNER/NAME (default: the bundled picochat)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--engine", choices=["nanochat_c", "torch"], default="nanochat_c")
    ap.add_argument("--problems", type=int, default=20, help="how many generated questions")
    ap.add_argument("--problems-file", help="a JSON file of problems instead (e.g. tests/data/picochat/heldout.json)")
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-batch", type=int, default=None, help="nanochat_c: rows decoding together")
    ap.add_argument("--batched", action="store_true", help="all problems in one generate_many (nanochat_c)")
    ap.add_argument("--json-out", help="write every problem's prompt, tokens, masks and outcome here")
    args = ap.parse_args()
    if args.batched and args.engine != "nanochat_c":
        ap.error("--batched needs --engine nanochat_c (generate_many)")

    problems = load_problems(args.problems_file) if args.problems_file else make_problems(args.problems, args.seed)
    task = ArithmeticTask(problems)
    engine, render, decode = make_engine(args)
    t0 = time.time()
    run = run_batched_eval if args.batched else run_generative_eval
    records = run(task, engine, render, decode, args)
    took = time.time() - t0
    passed = sum(r["passed"] for r in records)
    generated = sum(len(t) for r in records for t in r["tokens"])
    tool = sum(u for r in records for u in r["used_tool"])
    samples = sum(len(r["tokens"]) for r in records)
    print(f"engine {args.engine}{' (generate_many)' if args.batched else ''}: {generated} tokens in {took:.2f} s "
          f"({generated / took:.0f} tok/s); the calculator ran in {tool} of {samples} samples")
    print("=" * 50)
    print(f"Final: {passed}/{len(records)} ({100 * passed / len(records):.2f}%)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"engine": args.engine, "accuracy": passed / len(records), "problems": records}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
