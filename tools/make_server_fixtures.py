#!/usr/bin/env python3
"""make_server_fixtures.py: a tiny nanochat checkpoint and PyTorch reference
generations for the server tests (tests/py/test_server_*.py). Writes
tests/data/server/.

The model: nanochat V1 (docs/model.md, V1 forward), L=2, C=64, H=2 (D=32), sequence_len 256,
written exactly as nanochat writes a flat download: model_000001.pt
(torch.save of the state dict; wte bf16, other matrices fp32),
meta_000001.json (model_config) and tokenizer.pkl (a pickled
tiktoken.Encoding: the 256 byte tokens plus nanochat's nine special tokens,
vocab 265). Weights are random (seeded) with one twist so the text reads
like text: lm_head rows of letters and space are scaled up, other bytes
down, so greedy decoding mostly picks ASCII letters; the <|assistant_end|>
row is a slightly longer copy of the 'q' row, so that some conversations end
on their own (finish_reason "stop" through the stop token).

The references (cases.json), all from PyTorch in fp32 on the CPU with
nanochat's numerics (tools/make_forward_fixtures.py's reference_forward,
written from docs/model.md):
  - prompt token ids of each conversation, rendered as nanochat does (docs/model.md, Chat format)
    (<|bos|>, <|user_start|> text <|user_end|>, ..., <|assistant_start|>),
    user text encoded with tiktoken's encode_ordinary;
  - the greedy continuation (argmax, first index on ties) up to 64 tokens or
    the first terminal token (<|assistant_end|> / <|bos|>), its text
    (bytes decoded with errors="replace", terminal excluded);
  - log-probabilities (log_softmax of the softcapped logits) of the chosen
    token and the top 5 alternatives at the first 16 generated positions,
    and the smallest top-1/top-2 logit margin seen (how close a tie came).

Usage: python3 tools/make_server_fixtures.py [--out tests/data/server]
(needs torch and tiktoken; a few seconds on a CPU).
"""
import argparse
import json
import os
import pickle
import sys

import tiktoken
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_forward_fixtures import reference_forward  # noqa: E402

SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                 r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
SPECIALS = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
            "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]
CFG = {"sequence_len": 256, "vocab_size": 265, "n_layer": 2, "n_head": 2, "n_kv_head": 2, "n_embd": 64}
MAX_NEW = 64
TOP = 5
LOGPROB_POSITIONS = 16  # reference logprobs kept for the first positions only

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Hello there! How are you today?"}],
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris."},
     {"role": "user", "content": "And of Italy?"}],
    [{"role": "user", "content": "Tell me a story about a dragon who learned to bake bread in a small village."}],
    [{"role": "user", "content": "x"}],
    [{"role": "user", "content": "Count: one two three four five six seven eight nine ten eleven twelve"}],
    [{"role": "user", "content": "Übung macht den Meister — naïve café ☕ 日本語"}],
    [{"role": "user", "content": "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3}],
    [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."},
     {"role": "user", "content": "Because why?"}, {"role": "assistant", "content": "Just because."},
     {"role": "user", "content": "ok"}],
    [{"role": "user", "content": "Please write one long sentence about the sea, the wind and the sky at dawn."}],
]

COMPLETIONS = ["Once upon a time", "The quick brown fox", "1 2 3 4"]


def make_tokenizer():
    ranks = {bytes([i]): i for i in range(256)}
    specials = {name: 256 + k for k, name in enumerate(SPECIALS)}
    return tiktoken.Encoding(name="server-test", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
                             special_tokens=specials)


def make_weights(enc):
    g = torch.Generator().manual_seed(1234)
    L, C, V = CFG["n_layer"], CFG["n_embd"], CFG["vocab_size"]
    F4 = 4 * C

    def rnd(*shape, std):
        return torch.randn(*shape, generator=g) * std

    sd = {"transformer.wte.weight": rnd(V, C, std=1.0).bfloat16()}
    for l in range(L):
        p = f"transformer.h.{l}."
        sd[p + "attn.c_q.weight"] = rnd(C, C, std=C ** -0.5)
        sd[p + "attn.c_k.weight"] = rnd(C, C, std=C ** -0.5)
        sd[p + "attn.c_v.weight"] = rnd(C, C, std=C ** -0.5)
        sd[p + "attn.c_proj.weight"] = rnd(C, C, std=0.5 * C ** -0.5)
        sd[p + "mlp.c_fc.weight"] = rnd(F4, C, std=C ** -0.5)
        sd[p + "mlp.c_proj.weight"] = rnd(C, F4, std=0.5 * F4 ** -0.5)
    lm = rnd(V, C, std=C ** -0.5)
    scale = torch.full((V,), 0.3)
    for ch in b"abcdefghijklmnopqrstuvwxyz ":
        scale[ch] = 4.0
    for ch in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?":
        scale[ch] = 1.5
    lm = lm * scale[:, None]
    # <|assistant_end|> wins wherever 'q' would: some replies end on their own.
    lm[enc.encode_single_token("<|assistant_end|>")] = lm[ord("q")] * 1.05
    sd["lm_head.weight"] = lm
    return sd


def render_chat(enc, messages):
    s = lambda name: enc.encode_single_token(name)  # noqa: E731
    ids = [s("<|bos|>")]
    for m in messages:
        tag = "user" if m["role"] == "user" else "assistant"
        ids += [s(f"<|{tag}_start|>")] + enc.encode_ordinary(m["content"]) + [s(f"<|{tag}_end|>")]
    return ids + [s("<|assistant_start|>")]


def generate(W, enc, prompt):
    """Greedy continuation with reference log-probabilities."""
    stops = {enc.encode_single_token("<|assistant_end|>"), enc.encode_single_token("<|bos|>")}
    ids, out, lps = list(prompt), [], []
    cfg = dict(CFG, gen="V1")
    stopped = False
    while len(out) < MAX_NEW and len(ids) < CFG["sequence_len"]:
        logits = reference_forward(cfg, W, ids)[-1].double()
        logp = torch.log_softmax(logits, dim=-1)
        tok = int(torch.argmax(logits))  # first index on ties
        top = torch.topk(logp, TOP)
        margin = float(torch.topk(logits, 2).values[0] - torch.topk(logits, 2).values[1])
        lps.append({"logprob": float(logp[tok]), "top_ids": [int(i) for i in top.indices],
                    "top_logprobs": [float(v) for v in top.values], "margin": margin})
        out.append(tok)
        ids.append(tok)
        if tok in stops:
            stopped = True
            break
    text_ids = out[:-1] if stopped else out
    text = b"".join(enc.decode_single_token_bytes(t) for t in text_ids).decode("utf-8", errors="replace")
    return {"prompt_ids": list(prompt), "greedy_ids": out, "stopped": stopped, "text": text,
            "logprobs": lps[:LOGPROB_POSITIONS], "min_margin": min(x["margin"] for x in lps)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/server")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    enc = make_tokenizer()
    sd = make_weights(enc)
    torch.save(sd, os.path.join(args.out, "model_000001.pt"))
    with open(os.path.join(args.out, "meta_000001.json"), "w") as f:
        json.dump({"step": 1, "model_config": CFG}, f, indent=1)
    with open(os.path.join(args.out, "tokenizer.pkl"), "wb") as f:
        pickle.dump(enc, f)
    W = {k: v.float() for k, v in sd.items()}
    cases = {"model": CFG, "max_new_tokens": MAX_NEW, "top_logprobs": TOP, "chat": [], "completion": []}
    for conv in CONVERSATIONS:
        case = generate(W, enc, render_chat(enc, conv))
        case["messages"] = conv
        cases["chat"].append(case)
        print(f"chat {len(case['prompt_ids']):3d} prompt tokens -> {len(case['greedy_ids'])} "
              f"(stop={case['stopped']}, margin {case['min_margin']:.4f}): {case['text'][:50]!r}")
    for text in COMPLETIONS:
        prompt = [enc.encode_single_token("<|bos|>")] + enc.encode_ordinary(text)
        case = generate(W, enc, prompt)
        case["prompt"] = text
        cases["completion"].append(case)
        print(f"completion {text!r} -> {case['text'][:50]!r}")
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
