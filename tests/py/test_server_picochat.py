#!/usr/bin/env python3
"""test_server_picochat.py: the server with the bundled chat model
(models/picochat) against PyTorch's greedy transcripts
(tests/data/picochat/golden.json, written by tools/train_picochat.py with
nanochat's calculator forcing).

For every golden conversation, all at once (so they share the engine's
batches):
  - OpenAI chat API: the content is the decoded tokens (tool tokens as their
    special-token text, the terminal token dropped), finish_reason and usage
    match;
  - nanochat's protocol: the text deltas are the decoded non-tool tokens and
    each calculator call arrives as tool events whose expression and result
    are the decoded tokens between <|python_start|>..<|python_end|> and
    <|output_start|>..<|output_end|>.
Token texts are decoded with tiktoken from the model's own tokenizer.pkl.
"""
import http.client
import json
import os
import pickle
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import JSON, ROOT, Checker, Server, sse_events  # noqa: E402

MODEL = os.path.join(ROOT, "models", "picochat")
GOLDEN = os.path.join(ROOT, "tests", "data", "picochat", "golden.json")


def expected_nanochat(enc, tokens):
    """(text without tool tokens, [(expr, result)]) from golden token ids."""
    sp = {name: enc.encode_single_token(name) for name in
          ("<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>", "<|assistant_end|>", "<|bos|>")}
    text, tools, mode, expr, res = b"", [], None, b"", b""
    for t in tokens:
        if t in (sp["<|assistant_end|>"], sp["<|bos|>"]):
            break
        if t == sp["<|python_start|>"]:
            mode, expr = "expr", b""
        elif t == sp["<|python_end|>"]:
            mode = None
        elif t == sp["<|output_start|>"]:
            mode, res = "res", b""
        elif t == sp["<|output_end|>"]:
            mode = None
            tools.append((expr.decode("utf-8", "replace"), res.decode("utf-8", "replace")))
        elif mode == "expr":
            expr += enc.decode_single_token_bytes(t)
        elif mode == "res":
            res += enc.decode_single_token_bytes(t)
        else:
            text += enc.decode_single_token_bytes(t)
    return text.decode("utf-8", "replace"), tools


def openai_request(port, case):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("POST", "/v1/chat/completions", json.dumps(
        {"messages": case["messages"], "temperature": 0, "max_tokens": case["max_tokens"]}), JSON)
    r = c.getresponse()
    return r.status, json.loads(r.read())


def nanochat_request(port, case):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("POST", "/chat/completions", json.dumps(
        {"messages": case["messages"], "temperature": 0, "top_k": 0, "max_tokens": case["max_tokens"]}), JSON)
    text, tools = "", []
    for ev in sse_events(c.getresponse()):
        text += ev.get("token", "")
        tool = ev.get("tool")
        if tool and tool["state"] == "result":
            tools.append((tool["expr"], tool["result"]))
    return text, tools


def main():
    ck = Checker("test_server_picochat")
    if not os.path.isdir(MODEL) or not os.path.exists(GOLDEN):
        print("skipped: models/picochat or its golden transcripts are not in this checkout")
        return 77
    with open(GOLDEN, encoding="utf-8") as f:
        golden = json.load(f)
    with open(os.path.join(MODEL, "tokenizer.pkl"), "rb") as f:
        enc = pickle.load(f)
    step_file = "model_%06d.pt" % golden["model_step"]
    if not ck.check(os.path.exists(os.path.join(MODEL, step_file)),
                    f"golden.json was made with {step_file}, which models/picochat does not hold"):
        return ck.summary()
    cases = golden["cases"]
    with Server("--max-batch", "64", model=("-m", MODEL)) as srv:
        results = [None] * (2 * len(cases))

        def run(i):
            case = cases[i % len(cases)]
            try:
                results[i] = openai_request(srv.port, case) if i < len(cases) else nanochat_request(srv.port, case)
            except Exception as e:  # reported below
                results[i] = ("exception", repr(e))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for i, case in enumerate(cases):
            status, r = results[i]
            if not ck.check(status == 200, f"{case['name']}: {status} {r}"):
                continue
            toks = case["tokens"]  # generated ids, the terminal token excluded
            stopped = case["finish_reason"] == "stop"
            want = enc.decode(toks)
            ch = r["choices"][0]
            ck.check(ch["message"]["content"] == want, f"{case['name']}: {ch['message']['content']!r} != {want!r}")
            ck.check(ch["finish_reason"] == case["finish_reason"], f"{case['name']}: finish {ch['finish_reason']}")
            ck.check(r["usage"]["prompt_tokens"] == len(case["prompt_ids"]) and
                     r["usage"]["completion_tokens"] == len(toks) + stopped,  # + the terminal token
                     f"{case['name']}: usage {r['usage']}")
            got = results[len(cases) + i]
            ck.check(got == expected_nanochat(enc, toks),
                     f"{case['name']} (nanochat protocol): {got!r} != {expected_nanochat(enc, toks)!r}")
        ck.check(any(expected_nanochat(enc, c["tokens"])[1] for c in cases), "no golden case calls the calculator")
        ck.check(srv.alive(), "server alive")
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
