#!/usr/bin/env python3
"""make_generate_fixtures.py: greedy continuations from PyTorch for the CLI
test of `nanochat generate` / `nanochat chat` (tests/sh/test_cli_engine.sh).

Model: the tiny V1 checkpoint tests/data/ckpt/v1 (model_000005.pt +
tokenizer.pkl, made by tools/make_checkpoint_fixtures.py). Forward pass:
transformers' NanoChatForCausalLM adjusted to nanochat's numerics, as in
tools/make_forward_fixtures.py (hf_v1_model). Prompts: tiktoken's
encode_ordinary of the tokenizer.pkl Encoding; chat prompts rendered as
nanochat does (docs/model.md, Chat format: system merged into the first user message).
Generation: nanochat's Engine rules written out here - argmax, stop on
<|assistant_end|> / <|bos|> (kept as the last token), max_tokens, the
context limit, and the calculator tool (tools/calculator_reference.py)
forcing <|output_start|> result <|output_end|>.

Writes tests/data/generate/v1_greedy.json. Usage:
  python3 tools/make_generate_fixtures.py
"""
import json
import os
import pickle
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, HERE)
import calculator_reference as calc  # noqa: E402
from make_forward_fixtures import hf_v1_model  # noqa: E402

CKPT = os.path.join(ROOT, "tests", "data", "ckpt", "v1")
MAX_TOKENS = 24


def load():
    meta = json.load(open(os.path.join(CKPT, "meta_000005.json")))
    W = torch.load(os.path.join(CKPT, "model_000005.pt"), map_location="cpu")
    W = {k.removeprefix("_orig_mod."): v for k, v in W.items()}
    mc = meta["model_config"]
    cfg = dict(gen="V1", padded_vocab=W["lm_head.weight"].shape[0], **mc)
    enc = pickle.load(open(os.path.join(CKPT, "tokenizer.pkl"), "rb"))
    return cfg, hf_v1_model(cfg, W), enc


def generate(forward, enc, ids, max_tokens, ctx, use_calc=True):
    sp = enc._special_tokens
    ids, out, gap = list(ids), [], float("inf")
    forced, expr, in_py = [], [], False
    finish = "length"
    while True:
        logits = forward(ids)[-1]
        top = torch.topk(logits, 2).values
        sampled = int(torch.argmax(logits))
        if forced:
            tok, was_forced = forced.pop(0), True
        else:
            tok, was_forced = sampled, False
            gap = min(gap, float(top[0] - top[1]))
        out.append(tok)
        ids.append(tok)
        if use_calc:
            if tok == sp["<|python_start|>"]:
                in_py, expr = True, []
            elif tok == sp["<|python_end|>"] and in_py:
                in_py = False
                if expr:
                    r = calc.calculator_result(enc.decode(expr))
                    if r is not None:
                        forced = [sp["<|output_start|>"]] + enc.encode_ordinary(r) + [sp["<|output_end|>"]]
                expr = []
            elif in_py:
                expr.append(tok)
        if not was_forced and tok in (sp["<|assistant_end|>"], sp["<|bos|>"]):
            finish = "stop"
            break
        if len(out) >= max_tokens or len(ids) >= ctx:
            break
    return out, finish, gap


def chat_prompt(enc, user, system=None):
    sp = enc._special_tokens
    text = system + "\n\n" + user if system else user
    return ([sp["<|bos|>"], sp["<|user_start|>"]] + enc.encode_ordinary(text) +
            [sp["<|user_end|>"], sp["<|assistant_start|>"]])


def main():
    cfg, forward, enc = load()
    bos = enc._special_tokens["<|bos|>"]
    cases = []
    for text in ["Hello world", "The quick brown fox", "1+1=", "ab"]:
        ids = [bos] + enc.encode_ordinary(text)
        toks, finish, gap = generate(forward, enc, ids, MAX_TOKENS, cfg["sequence_len"])
        cases.append({"mode": "generate", "text": text, "prompt": ids, "max_tokens": MAX_TOKENS,
                      "tokens": toks, "finish_reason": finish, "min_gap": gap})
    for text, system in [("Hi there", None), ("What is 2+2?", None), ("Tell me a story", "Be brief.")]:
        ids = chat_prompt(enc, text, system)
        toks, finish, gap = generate(forward, enc, ids, MAX_TOKENS, cfg["sequence_len"])
        cases.append({"mode": "chat", "text": text, "system": system, "prompt": ids, "max_tokens": MAX_TOKENS,
                      "tokens": toks, "finish_reason": finish, "min_gap": gap})
    for c in cases:
        assert c["min_gap"] > 1e-4, f"near tie in {c['text']!r}: pick another prompt"
        print(f"{c['mode']:8s} {c['text']!r}: {len(c['tokens'])} tokens, {c['finish_reason']}, "
              f"min gap {c['min_gap']:.3g}")
    out = os.path.join(ROOT, "tests", "data", "generate")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "v1_greedy.json"), "w") as f:
        json.dump({"model": "tests/data/ckpt/v1", "reference": "transformers NanoChatForCausalLM "
                   "(nanochat numerics) + nanochat Engine rules", "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
