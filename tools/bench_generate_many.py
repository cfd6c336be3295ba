#!/usr/bin/env python3
"""bench_generate_many.py: issue 19's target, measured. nanochat_c's
generate_many of P prompts x S samples x N new tokens against nanochat's
PyTorch Engine.generate_batch run prompt by prompt (the loop of nanochat's
chat_eval.py / chat_rl.py), on the same card, d34 shapes with random
weights.

  --engine nanochat_c   one process per run: load(random=MODEL, device=cuda,
                        max_batch=B, kv_blocks=K), a warm-up generate_many,
                        then the timed one (temperature 1, top-k 50); for
                        each B of --max-batch, and once more with
                        logprobs=True at the last B
  --engine torch        nanochat's Engine written again in PyTorch
                        (tools/nanochat_engine.py, V1 model of
                        tools/picochat_model.py in bf16 on the GPU, KV
                        cache, SDPA attention), generate_batch(prompt, S,
                        N, ...) for the first --torch-prompts prompts after
                        one warm-up prompt; every prompt costs the same, so
                        tokens per second over a few is the loop's rate
  --report A.json B.json  the table: tokens/s of each run, the ratio

Prompts: --prompt-len random ids below 4087 (picochat's tokenizer, whose
special ids the engines watch), the same for both engines (seeded). With
random weights a row almost never samples a terminal or tool token, so
every row generates N tokens; the counts are measured, not assumed.
Output: one line per run and `JSON {...}`; --json-out keeps the JSON.
"""
import argparse
import json
import os
import random
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHAPES = {"d20": (20, 1280, 10), "d26": (26, 1664, 13), "d32": (32, 2048, 16), "d34": (34, 2176, 17)}
PICO_SPECIALS = {"<|bos|>": 4087, "<|user_start|>": 4088, "<|user_end|>": 4089, "<|assistant_start|>": 4090,
                 "<|assistant_end|>": 4091, "<|python_start|>": 4092, "<|python_end|>": 4093,
                 "<|output_start|>": 4094, "<|output_end|>": 4095}


def make_prompts(n, length, seed=19):
    rng = random.Random(seed)
    return [[4087] + [rng.randrange(4087) for _ in range(length - 1)] for _ in range(n)]


def kv_blocks_for(prompts, samples, new_tokens):
    """Blocks of 64 positions for every request at once, as the scheduler
    reserves them (prompt blocks shared by a request's rows), plus slack."""
    total = 0
    for p in prompts:
        per_row = -(-(len(p) + new_tokens) // 64)
        total += per_row + (samples - 1) * (per_row - len(p) // 64)
    return total + 64


def bench_nanochat_c(args, prompts):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import nanochat_c
    runs = []
    sizes = [int(b) for b in args.max_batch.split(",")]
    for i, b in enumerate(sizes):
        for logprobs in ([False, True] if i == len(sizes) - 1 else [False]):
            kv = kv_blocks_for(prompts[:max(1, b // args.samples)], args.samples, args.new_tokens)
            t0 = time.time()
            engine = nanochat_c.load(random=args.model, device=args.device, max_batch=b, kv_blocks=kv)
            loaded = time.time() - t0
            kw = dict(num_samples=args.samples, max_tokens=args.new_tokens, temperature=1.0, top_k=50,
                      logprobs=logprobs)
            engine.generate_many(prompts[:max(1, b // args.samples)], **{**kw, "max_tokens": 8})  # warm-up
            t0 = time.time()
            out = engine.generate_many(prompts, **kw)
            took = time.time() - t0
            tokens = sum(len(c.tokens) for p in out for c in p)
            run = {"engine": "nanochat_c", "max_batch": b, "kv_blocks": kv, "logprobs": logprobs, "tokens": tokens,
                   "seconds": took, "tok_s": tokens / took, "load_s": loaded, "device": engine.model.device}
            print(f"nanochat_c max_batch {b:5d} kv_blocks {kv:6d} logprobs {int(logprobs)}: {tokens} tokens in "
                  f"{took:.2f} s = {tokens / took:,.0f} tok/s (load {loaded:.1f} s)", flush=True)
            runs.append(run)
            engine.close()
    return runs


class SpecialsOnly:
    """The tokenizer calls the Engine makes, for random weights: special ids
    as picochat's; decode gives no text, so an expression never evaluates."""

    def encode_special(self, text):
        return PICO_SPECIALS[text]

    def get_bos_token_id(self):
        return PICO_SPECIALS["<|bos|>"]

    def encode(self, text):
        return []

    def decode(self, ids):
        return ""


def bench_torch(args, prompts):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import nanochat_engine
    from picochat_model import GPT, GPTConfig
    L, C, H = SHAPES[args.model]
    cfg = GPTConfig(sequence_len=2048, vocab_size=65536, n_layer=L, n_head=H, n_kv_head=H, n_embd=C)
    t0 = time.time()
    with torch.device(args.device):
        model = GPT(cfg)
    model = model.to(device=args.device, dtype=torch.bfloat16).eval()
    loaded = time.time() - t0
    engine = nanochat_engine.Engine(model, SpecialsOnly())
    kw = dict(num_samples=args.samples, max_tokens=args.new_tokens, temperature=1.0, top_k=50)
    engine.generate_batch(prompts[-1], **kw)  # warm-up
    torch.cuda.synchronize()
    t0 = time.time()
    tokens = 0
    for i, p in enumerate(prompts[:args.torch_prompts]):
        results, _ = engine.generate_batch(p, seed=i, **kw)
        tokens += sum(len(r) - len(p) for r in results)
    torch.cuda.synchronize()
    took = time.time() - t0
    print(f"torch Engine.generate_batch, prompt by prompt ({args.torch_prompts} prompts): {tokens} tokens in "
          f"{took:.2f} s = {tokens / took:,.0f} tok/s (model ready in {loaded:.1f} s)", flush=True)
    return [{"engine": "torch", "prompts": args.torch_prompts, "tokens": tokens, "seconds": took,
             "tok_s": tokens / took, "device": torch.cuda.get_device_name()}]


def report(paths):
    runs = [r for p in paths if os.path.exists(p) for r in json.load(open(p))["runs"]]
    base = next((r for r in runs if r["engine"] == "torch"), None)
    print("| engine | setting | tokens | seconds | tok/s | vs PyTorch loop |")
    print("|---|---|---:|---:|---:|---:|")
    for r in runs:
        setting = (f"prompt by prompt, {r['prompts']} prompts" if r["engine"] == "torch" else
                   f"generate_many, max_batch {r['max_batch']}{', logprobs' if r['logprobs'] else ''}")
        ratio = f"{r['tok_s'] / base['tok_s']:.1f}x" if base else "n/a"
        print(f"| {r['engine']} | {setting} | {r['tokens']} | {r['seconds']:.2f} | {r['tok_s']:,.0f} | {ratio} |")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=["nanochat_c", "torch"])
    ap.add_argument("--model", default="d34", help="d20, d26, d32, d34 (nanochat_c also takes L,C,H)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--max-batch", default="256,1024", help="nanochat_c: rows decoding together, one run each")
    ap.add_argument("--torch-prompts", type=int, default=6)
    ap.add_argument("--json-out")
    ap.add_argument("--report", nargs="+", metavar="JSON")
    args = ap.parse_args()
    if args.report:
        return report(args.report)
    if not args.engine:
        ap.error("--engine or --report is required")
    if args.engine == "torch" and args.model not in SHAPES:
        ap.error(f"--engine torch takes one of {', '.join(sorted(SHAPES))}")
    prompts = make_prompts(args.prompts, args.prompt_len)
    runs = bench_nanochat_c(args, prompts) if args.engine == "nanochat_c" else bench_torch(args, prompts)
    out = {"model": args.model, "prompts": args.prompts, "samples": args.samples, "new_tokens": args.new_tokens,
           "prompt_len": args.prompt_len, "runs": runs}
    print("JSON " + json.dumps(out))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
