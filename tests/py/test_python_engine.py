#!/usr/bin/env python3
"""test_python_engine.py: the nanochat_c package (python/) on the bundled
picochat model, CPU, through build/libnanochat.so.

References (none of them this package's own output):
  - tests/data/picochat/golden.json: PyTorch's greedy transcripts with
    nanochat's calculator forcing; margins are null exactly where PyTorch's
    engine forced a token, which gives the expected masks;
  - the C library's other front end: `nanochat chat --json` (the CLI);
  - tests/data/forward/tiny_v1: PyTorch's logits of a tiny V1 model, for
    log-probabilities (log-softmax computed here with NumPy) and greedy
    tokens (argmax);
  - tiktoken on picochat's tokenizer.pkl, for encode / decode, and
    nanochat's render_conversation rules written out here on tiktoken ids;
  - tests/py/hub_mock.py serving picochat as the Hub, for hf: names.
Checked: greedy generate / generate_batch = PyTorch's tokens and masks and
the CLI's; forced tokens have mask 0; num_samples=4 with a seed is
reproducible and another seed differs; generate_many of 64 prompts = one by
one; NumPy arrays as input; bad input raises NanochatError (or TypeError /
ValueError for Python-side types) with the library's message; Ctrl-C (and
closing a generator) cancels cleanly; an hf: name loads through the
library, and Ctrl-C stops its download; weights= is refused clearly for the
formats the C API lacks; `pip install ./python` gives a package that finds
its library.
"""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("NC_BUILD", os.path.join(ROOT, "build"))
LIB = os.path.join(BUILD, "libnanochat.so")
BIN = os.environ.get("NC_BIN", os.path.join(BUILD, "nanochat"))
PICO = os.path.join(ROOT, "models", "picochat")
TIE = 1e-3
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.dirname(__file__))
os.environ["NANOCHAT_LIB"] = LIB
os.environ.pop("NANOCHAT_MODEL", None)

import numpy as np  # noqa: E402
import tiktoken  # noqa: E402,F401  (tokenizer.pkl unpickles into it)

import nanochat_c  # noqa: E402
from hub_mock import MockHub, Repo  # noqa: E402
from server_util import Checker  # noqa: E402

GOLDEN = json.load(open(os.path.join(ROOT, "tests", "data", "picochat", "golden.json")))["cases"]
CK = Checker("test_python_engine")
check = CK.check


def raises(fn, exc, needle, what):
    try:
        fn()
    except exc as e:
        return check(needle in str(e), f"{what}: message {str(e)!r} lacks {needle!r}")
    except Exception as e:  # noqa: BLE001
        return check(False, f"{what}: raised {type(e).__name__}: {e}")
    return check(False, f"{what}: no exception")


def golden_masks(case):
    """1 where PyTorch sampled, 0 where its engine forced (margin null)."""
    return [0 if m is None else 1 for m in case["margins"]][:len(case["tokens"])]


def matches(case, tokens):
    """Equal to PyTorch's tokens, or different first where it had a near-tie."""
    want = case["tokens"]
    if tokens == want:
        return True
    i = next((k for k in range(min(len(tokens), len(want))) if tokens[k] != want[k]), min(len(tokens), len(want)))
    m = case["margins"][i] if i < len(case["margins"]) else None
    return m is not None and m < TIE


# ---- greedy against PyTorch and the CLI

def test_greedy(engine):
    tok = engine.tokenizer
    exact = 0
    for case in GOLDEN:
        prompt = case["prompt_ids"]
        results, masks = engine.generate_batch(prompt, num_samples=1, max_tokens=case["max_tokens"], temperature=0)
        got, got_masks = results[0][len(prompt):], masks[0]
        check(results[0][:len(prompt)] == prompt and got_masks[:len(prompt)] == [0] * len(prompt),
              f"{case['name']}: generate_batch does not start with the prompt and zero masks")
        if not check(matches(case, got), f"{case['name']}: {got[:12]}... vs PyTorch {case['tokens'][:12]}..."):
            continue
        if got != case["tokens"]:
            continue
        exact += 1
        check(got_masks[len(prompt):] == golden_masks(case), f"{case['name']}: masks differ from PyTorch's forcing")
        # generate: the same tokens column by column, the terminal token yielded last
        cols = list(engine.generate(prompt, max_tokens=case["max_tokens"], temperature=0))
        stream = [c[0][0] for c in cols]
        stream_masks = [c[1][0] for c in cols]
        terminal = tok.terminal_ids()
        ended = case["finish_reason"] == "stop"
        check(stream[:len(got)] == got and stream_masks[:len(got)] == golden_masks(case),
              f"{case['name']}: generate's columns differ from generate_batch")
        check(len(stream) == len(got) + ended and (not ended or stream[-1] in terminal),
              f"{case['name']}: generate yielded {len(stream)} columns for {len(got)} tokens ({case['finish_reason']})")
    print(f"greedy: {len(GOLDEN)} cases, {exact} equal PyTorch's tokens exactly")
    check(exact >= len(GOLDEN) - 2, f"only {exact} of {len(GOLDEN)} exact")

    # the calculator cases: the forced span is <|output_start|> result <|output_end|>, mask 0
    forced_cases = 0
    for case in GOLDEN:
        if case["kind"] not in ("arithmetic", "letters"):
            continue
        _, masks = engine.generate_batch(case["prompt_ids"], max_tokens=case["max_tokens"], temperature=0)
        toks = case["tokens"]
        m = masks[0][len(case["prompt_ids"]):]
        zero = [toks[i] for i in range(min(len(m), len(toks))) if m[i] == 0]
        if zero:
            forced_cases += 1
            check(zero[0] == tok.encode_special("<|output_start|>") and zero[-1] == tok.encode_special("<|output_end|>"),
                  f"{case['name']}: mask-0 tokens {tok.decode(zero)!r} are not one tool output")
    check(forced_cases >= 20, f"only {forced_cases} calculator cases had forced tokens")

    # the CLI (another front end of the same library) gives the same tokens
    for case in GOLDEN[::7]:
        if len(case["messages"]) != 1:
            continue
        p = subprocess.run([BIN, "chat", "-m", PICO, "--device", "cpu", "--json", "--temperature", "0",
                            "--max-tokens", str(case["max_tokens"]), "-p", case["messages"][0]["content"]],
                           capture_output=True, text=True, timeout=120)
        cli = json.loads(p.stdout)["tokens"] if p.returncode == 0 else None
        results, _ = engine.generate_batch(case["prompt_ids"], max_tokens=case["max_tokens"], temperature=0)
        check(cli is not None and [t for t in cli if t not in tok.terminal_ids()] == results[0][len(case["prompt_ids"]):],
              f"{case['name']}: the CLI says {cli}")


def test_8bit():
    """weights= and kv_cache= reach the library: greedy tokens equal the
    CLI's with the same flags (the same quantiser and kernels), and the
    log-probability of the first token differs from the float engine's (so
    an ignored option cannot pass by the models agreeing on the argmax)."""
    case = next(c for c in GOLDEN if len(c["messages"]) == 1)
    with nanochat_c.load(PICO, device="cpu") as eng:
        (float_lp,), = eng.generate_many([case["prompt_ids"]], max_tokens=1, temperature=0, logprobs=True)
    for flags, kwargs in ((["--weights", "int8"], {"weights": "int8"}),
                          (["--weights", "fp8", "--kv-cache", "fp8"], {"weights": "fp8", "kv_cache": "fp8"})):
        eng = nanochat_c.load(PICO, device="cpu", **kwargs)
        p = subprocess.run([BIN, "chat", "-m", PICO, "--device", "cpu", "--json", "--temperature", "0",
                            "--max-tokens", str(case["max_tokens"]), "-p", case["messages"][0]["content"]] + flags,
                           capture_output=True, text=True, timeout=120)
        cli = json.loads(p.stdout)["tokens"] if p.returncode == 0 else None
        results, _ = eng.generate_batch(case["prompt_ids"], max_tokens=case["max_tokens"], temperature=0)
        tok = eng.tokenizer
        check(cli is not None and [t for t in cli if t not in tok.terminal_ids()] ==
              results[0][len(case["prompt_ids"]):], f"{kwargs}: the CLI with {flags} says {cli} ({p.stderr[-300:]})")
        (lp,), = eng.generate_many([case["prompt_ids"]], max_tokens=1, temperature=0, logprobs=True)
        check(lp.logprobs[0] != float_lp.logprobs[0], f"{kwargs}: first log-prob {lp.logprobs[0]} equals the "
              "float engine's: the option did not reach the model")
        eng.close()


def test_deterministic(engine):
    """deterministic=True is accepted; on the CPU backend, always
    batch-invariant, seeded samples are those of the default engine, alone
    and among other prompts (the GPU side: tests/c/test_cuda_det.c)."""
    prompt = engine.tokenizer.encode("And the", prepend="<|bos|>")
    kw = dict(num_samples=3, max_tokens=24, temperature=1.0, top_k=50, seed=99)
    want = engine.generate_batch(prompt, **kw)
    with nanochat_c.load(PICO, device="cpu", deterministic=True) as det:
        check(det.generate_batch(prompt, **kw) == want, "deterministic=True: other samples than the default engine")
        others = [det.tokenizer.encode(t, prepend="<|bos|>") for t in ("Once", "The cat sat", "Why is the sky")]
        mkw = dict(num_samples=3, max_tokens=24, temperature=1.0, top_k=50, seed=99)
        alone = det.generate_many([prompt], **mkw)[0]
        among = det.generate_many(others[:1] + [prompt] + others[1:], **mkw)[1]
        check([c.tokens for c in among] == [c.tokens for c in alone] and alone[0].tokens,
              "deterministic=True: a prompt's samples change among other prompts")


# ---- sampling, many prompts, inputs

def test_sampling(engine):
    prompt = engine.tokenizer.encode("And the", prepend="<|bos|>")
    kw = dict(num_samples=4, max_tokens=40, temperature=1.0, top_k=50)
    a = engine.generate_batch(prompt, seed=123, **kw)
    b = engine.generate_batch(prompt, seed=123, **kw)
    c = engine.generate_batch(prompt, seed=124, **kw)
    check(a == b, "num_samples=4 with seed 123 differs between two runs")
    check(a != c, "seeds 123 and 124 gave the same samples")
    check(len({tuple(r) for r in a[0]}) > 1, "four samples of one seed are all alike")
    cols = list(engine.generate(prompt, seed=123, **kw))
    check(all(len(col) == 4 and len(m) == 4 for col, m in cols), "generate's columns are not 4 wide")
    for i in range(4):
        row = [col[i] for col, _ in cols]
        n = len(a[0][i]) - len(prompt)
        check(row[:n] == a[0][i][len(prompt):], f"generate row {i} differs from generate_batch's")
    many = engine.generate_many([prompt, prompt], seed=[123, 123], **kw)
    for s in range(2):
        check([c.tokens for c in many[s]] == [r[len(prompt):] for r in a[0]],
              "generate_many with seed 123 differs from generate_batch's samples")


def base_prompts(tok, n):
    words = ["And the", "The", "In the beginning", "A dog", "river (noun):", "Love is", "What", "I am",
             "happy (adjective):", "Thou shalt"]
    return [tok.encode(words[i % len(words)] + " " * (i // len(words)), prepend="<|bos|>") for i in range(n)]


def test_many(engine):
    tok = engine.tokenizer
    prompts = [c["prompt_ids"] for c in GOLDEN] + base_prompts(tok, 64 - len(GOLDEN))
    t0 = time.time()
    many = engine.generate_many(prompts, max_tokens=64, temperature=0, logprobs=True)
    t1 = time.time()
    one = [engine.generate_batch(p, max_tokens=64, temperature=0) for p in prompts]
    t2 = time.time()
    print(f"generate_many: 64 prompts in {t1 - t0:.2f} s; one by one {t2 - t1:.2f} s")
    check(len(many) == 64 and all(len(x) == 1 for x in many), "generate_many's shape")
    same = 0
    for p, (c,), (res, masks) in zip(prompts, many, one):
        ok = c.tokens == res[0][len(p):] and c.masks == masks[0][len(p):]
        same += ok
        check(len(c.logprobs) == len(c.tokens) and all(lp <= 0 for lp in c.logprobs) and
              all(lp == 0 for lp, m in zip(c.logprobs, c.masks) if m == 0), "logprobs: shape, sign, forced 0")
        check(c.finish_reason in ("stop", "length") and (c.finish_reason == "stop" or len(c.tokens) == 64),
              f"finish {c.finish_reason} with {len(c.tokens)} tokens")
    check(same == 64, f"generate_many equals one by one for {same} of 64 prompts")
    for case, (c,) in zip(GOLDEN, many):
        if case["max_tokens"] >= 64:
            check(matches(case, c.tokens[:len(case["tokens"])]) or len(case["tokens"]) > 64,
                  f"{case['name']}: generate_many differs from PyTorch")

    # NumPy input, 1-D and 2-D
    arr = np.array(GOLDEN[0]["prompt_ids"], dtype=np.int64)
    check(engine.generate_batch(arr, max_tokens=20, temperature=0) ==
          engine.generate_batch(GOLDEN[0]["prompt_ids"], max_tokens=20, temperature=0), "NumPy prompt")
    check(engine.generate_many(np.stack([arr, arr]), max_tokens=5, temperature=0)[1][0].tokens ==
          GOLDEN[0]["tokens"][:5], "2-D NumPy prompts")
    check(engine.generate_many([arr], max_tokens=0) == [[nanochat_c.Completion([], [], None, "length")]],
          "max_tokens=0 generates nothing")
    check(list(engine.generate(arr, max_tokens=0)) == [], "generate with max_tokens=0 yields nothing")


def test_logprobs():
    """tiny_v1's PyTorch logits: greedy token = argmax, logprob = log-softmax."""
    src = os.path.join(ROOT, "tests", "data", "forward", "tiny_v1")
    tmp = tempfile.mkdtemp(prefix="nc-py-tiny-")
    for f in os.listdir(src):
        if f.startswith(("model_", "meta_")):
            shutil.copy(os.path.join(src, f), tmp)
    enc = tiktoken.Encoding(name="bytes", pat_str=r".", mergeable_ranks={bytes([i]): i for i in range(256)},
                            special_tokens={})
    with open(os.path.join(tmp, "tokenizer.pkl"), "wb") as f:
        pickle.dump(enc, f)
    ids = [int(x) for x in open(os.path.join(src, "expected_ids.txt")).read().split()]
    logits = np.fromfile(os.path.join(src, "expected_logits.f32"), dtype="<f4").reshape(len(ids), -1)
    with nanochat_c.load(tmp, device="cpu") as engine:
        out = engine.generate_many([ids[:k + 1] for k in range(len(ids))], max_tokens=1, temperature=0,
                                   logprobs=True)
    worst = 0.0
    for k, (c,) in enumerate(out):
        row = logits[k].astype(np.float64)
        lse = row.max() + np.log(np.exp(row - row.max()).sum())
        want = int(np.argmax(row))
        check(c.tokens == [want], f"position {k}: greedy {c.tokens}, PyTorch's argmax {want}")
        worst = max(worst, abs(c.logprobs[0] - (row[want] - lse)))
    print(f"logprobs: {len(ids)} positions, max |ours - log_softmax(PyTorch)| = {worst:.2e}")
    check(worst < 1e-4, f"log-probabilities differ by {worst}")
    shutil.rmtree(tmp, ignore_errors=True)


# ---- the tokenizer

def test_tokenizer(engine):
    tok = engine.tokenizer
    with open(os.path.join(PICO, "tokenizer.pkl"), "rb") as f:
        enc = pickle.load(f)
    sp = enc._special_tokens
    texts = ["Hello world!", "What is 123 * 45?", "naïve café — 日本語 🙂", "  spaces\n\ttabs", "<|bos|> stays text"]
    for t in texts:
        check(tok.encode(t) == enc.encode_ordinary(t), f"encode({t!r}) differs from tiktoken")
        check(tok.decode(enc.encode_ordinary(t)) == t, f"decode of {t!r}")
    check(tok.encode(texts[:2], prepend="<|bos|>", append=sp["<|assistant_end|>"]) ==
          [[sp["<|bos|>"]] + enc.encode_ordinary(t) + [sp["<|assistant_end|>"]] for t in texts[:2]],
          "encode of a list with prepend / append")
    check(tok.get_bos_token_id() == sp["<|bos|>"] and tok.encode_special("<|python_end|>") == sp["<|python_end|>"],
          "special ids")
    check(tok.get_special_tokens() == set(sp) and tok.get_vocab_size() == enc.n_vocab, "vocabulary")
    check(tok.decode([sp["<|user_start|>"]]) == "<|user_start|>", "a special token decodes as its text")
    raises(lambda: tok.encode_special("<|nope|>"), KeyError, "nope", "unknown special token")
    raises(lambda: tok.decode([99999]), nanochat_c.NanochatError, "99999", "decode of an id outside the vocabulary")
    for case in GOLDEN:  # render_for_completion = the golden prompt (made by PyTorch's renderer)
        conv = {"messages": case["messages"] + [{"role": "assistant", "content": "x"}]}
        check(tok.render_for_completion(conv) == case["prompt_ids"], f"{case['name']}: render_for_completion")
    conv = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"},
                         {"role": "assistant", "content": [{"type": "text", "text": "Let me "},
                                                           {"type": "python", "text": "2+3"},
                                                           {"type": "python_output", "text": "5"},
                                                           {"type": "text", "text": "It is 5."}]}]}
    e = enc.encode_ordinary
    want_ids = ([sp["<|bos|>"], sp["<|user_start|>"]] + e("Be brief.\n\n2+3?") + [sp["<|user_end|>"]] +
                [sp["<|assistant_start|>"]] + e("Let me ") + [sp["<|python_start|>"]] + e("2+3") +
                [sp["<|python_end|>"], sp["<|output_start|>"]] + e("5") + [sp["<|output_end|>"]] + e("It is 5.") +
                [sp["<|assistant_end|>"]])
    n_user = 3 + len(e("Be brief.\n\n2+3?"))
    want_mask = ([0] * (n_user + 1) + [1] * (len(e("Let me ")) + 2 + len(e("2+3"))) + [0] * (2 + len(e("5"))) +
                 [1] * (len(e("It is 5.")) + 1))
    ids, mask = tok.render_conversation(conv)
    check(ids == want_ids and mask == want_mask, "render_conversation with tool parts and a system message")
    check(tok.render_conversation(conv, max_tokens=5) == (want_ids[:5], want_mask[:5]), "max_tokens truncation")


# ---- errors

def test_errors(engine):
    E = nanochat_c.NanochatError
    raises(lambda: nanochat_c.load("/no/such/model-dir", device="cpu"), E, "/no/such/model-dir", "unknown path")
    raises(lambda: nanochat_c.load(device="tpu"), E, "device", "unknown device")
    raises(lambda: nanochat_c.load(device="cpu", kv_cache="fp4"), ValueError, "kv_cache", "kv_cache fp4")
    raises(lambda: nanochat_c.load(device="cpu", weights="fp4"), ValueError, "weights", "weights fp4")
    raises(lambda: nanochat_c.load(device="cpu", max_batch=5000), E, "max_batch", "max_batch 5000")
    raises(lambda: engine.generate_batch([]), E, "empty", "empty prompt")
    raises(lambda: engine.generate_batch([4087, 99999]), E, "outside the vocabulary", "id out of range")
    raises(lambda: engine.generate_batch([4087, -1]), E, "outside the vocabulary", "negative id")
    raises(lambda: engine.generate_batch([4087, 72], temperature=-1.0), E, "temperature must be in [0, 10]",
           "negative temperature")
    raises(lambda: next(engine.generate([4087, 72], temperature=-1.0)), E, "temperature", "generate, temperature")
    raises(lambda: engine.generate_batch([4087, 72], top_k=-3), E, "top_k", "negative top_k")
    raises(lambda: engine.generate_batch([4087, 72], num_samples=9), E, "max_batch", "num_samples above max_batch")
    raises(lambda: engine.generate_batch([4087, 72], num_samples=0), ValueError, "num_samples", "num_samples 0")
    raises(lambda: engine.generate_batch([4087, 72], max_tokens=-2), E, "max_tokens", "negative max_tokens")
    raises(lambda: engine.generate_batch([4087] * 600), E, "context", "prompt beyond the context")
    raises(lambda: engine.generate_batch([4087, 1.5]), TypeError, "ints", "a float id")
    raises(lambda: engine.generate_batch("hello"), TypeError, "token ids", "a string prompt")
    raises(lambda: engine.generate_batch(np.array([1.0, 2.0])), TypeError, "integers", "a float array")
    raises(lambda: engine.generate_many([[4087, 72], []]), E, "empty", "generate_many with an empty prompt")
    raises(lambda: engine.generate_many([[4087, 72]], seed=[1, 2]), ValueError, "seeds", "seeds per prompt")
    # a failed submission left nothing running
    check(nanochat_c._lib.lib().nc_engine_step(engine.model.handle()) == 0, "engine not idle after refusals")
    check(engine.generate_batch(GOLDEN[0]["prompt_ids"], max_tokens=GOLDEN[0]["max_tokens"], temperature=0)[0][0]
          [len(GOLDEN[0]["prompt_ids"]):] == GOLDEN[0]["tokens"], "the engine works after the errors")


# ---- cancelling

CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's `cmd &` starts us with SIGINT ignored
    sys.path.insert(0, sys.argv[1])
    import nanochat_c
    engine = nanochat_c.load(device="cpu", max_batch=16)
    lib, h = nanochat_c._lib.lib(), engine.model.handle()
    prompts = [engine.tokenizer.encode("And the", prepend="<|bos|>")] * 256
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.time()
    try:
        engine.generate_many(prompts, num_samples=4, max_tokens=400, temperature=1.0)
        print("not interrupted")
    except KeyboardInterrupt:
        print(f"interrupted after {time.time() - t0:.2f} s")
    print("idle after the interrupt:", lib.nc_engine_step(h))
    gen = engine.generate(prompts[0], num_samples=2, max_tokens=300, temperature=1.0)
    for _ in range(3):
        next(gen)
    gen.close()
    print("idle after close:", lib.nc_engine_step(h))
    print(engine.generate_batch([4087, 4088, 72, 443, 111, 33, 4089, 4090], max_tokens=20, temperature=0)[0][0][8:])
""")


def test_cancel():
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", CHILD, os.path.join(ROOT, "python")], capture_output=True, text=True,
                       timeout=120)
    took = time.time() - t0
    out = p.stdout
    print(out.strip())
    hello = next(c for c in GOLDEN if c["name"] == "hello")
    check(p.returncode == 0, f"child exit {p.returncode}: {p.stderr[-1500:]}")
    check("interrupted after" in out and took < 60, f"Ctrl-C did not stop generate_many promptly ({took:.1f} s)")
    check("idle after the interrupt: 0" in out, "the interrupted requests were not reclaimed")
    check("idle after close: 0" in out, "closing a generator left its request running")
    check(str(hello["tokens"][:20]) in out, "the engine does not work after the interrupt")


# ---- hf: names, through the library

def test_hub():
    hub = MockHub()
    home = tempfile.mkdtemp(prefix="nc-py-hub-")
    saved = {k: os.environ.get(k) for k in ("HF_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    try:
        files = {n: open(os.path.join(PICO, n), "rb").read() for n in os.listdir(PICO)}
        hub.add(Repo("test/picochat", files))
        os.environ.update(HF_HOME=home, HF_ENDPOINT=hub.hub_url)
        for k in ("HF_HUB_OFFLINE", "HF_HUB_CACHE"):
            os.environ.pop(k, None)
        hello = next(c for c in GOLDEN if c["name"] == "hello")
        with nanochat_c.load("hf:test/picochat", device="cpu", progress=False) as engine:
            got = engine.generate_batch(hello["prompt_ids"], max_tokens=hello["max_tokens"], temperature=0)[0][0]
            check(got[len(hello["prompt_ids"]):] == hello["tokens"], "hf:test/picochat does not give picochat's reply")
            check("models--test--picochat" in engine.model.info.source.decode(), "hf: model not from the cache")
        raises(lambda: nanochat_c.load("hf:test/absent", device="cpu", progress=False), nanochat_c.NanochatError,
               "test/absent", "a repository the Hub lacks")

        # Ctrl-C during a slow download: load stops promptly with KeyboardInterrupt
        # (Python's own handler even when a shell's `cmd &` started the suite with SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        shutil.rmtree(home, ignore_errors=True)
        hub.faults["slow_bps"] = 200_000
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t0 = time.time()
        try:
            nanochat_c.load("hf:test/picochat", device="cpu", progress=False)
            check(False, "a 14 MB download at 200 kB/s finished within a second")
        except KeyboardInterrupt:
            took = time.time() - t0
            print(f"hub: Ctrl-C stopped the download after {took:.2f} s")
            check(took < 10, f"Ctrl-C took {took:.1f} s to stop the download")
    finally:
        hub.faults["slow_bps"] = 0
        hub.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)


# ---- packaging

def test_pip_install():
    venv = tempfile.mkdtemp(prefix="nc-py-venv-")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True, timeout=120)
        py = os.path.join(venv, "bin", "python")
        work = tempfile.mkdtemp(prefix="nc-py-src-")  # a copy: the install writes build/ and egg-info
        shutil.copytree(os.path.join(ROOT, "python"), os.path.join(work, "python"),
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.so"))
        os.makedirs(os.path.join(work, "build"))
        shutil.copy(LIB, os.path.join(work, "build"))
        p = subprocess.run([py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                            os.path.join(work, "python")], capture_output=True, text=True, timeout=300)
        if not check(p.returncode == 0, f"pip install ./python: {p.stderr[-1500:]}"):
            return
        env = {k: v for k, v in os.environ.items() if k != "NANOCHAT_LIB"}
        code = ("import nanochat_c, os; e = nanochat_c.load(device='cpu'); "
                "print(os.path.dirname(nanochat_c.__file__)); "
                "print(e.generate_batch([4087, 4088, 72, 443, 111, 33, 4089, 4090], max_tokens=20, temperature=0)[0][0][8:])")
        shutil.rmtree(work)  # the installed package must not need its source
        p = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120, cwd=venv, env=env)
        hello = next(c for c in GOLDEN if c["name"] == "hello")
        check(p.returncode == 0 and venv in p.stdout and str(hello["tokens"][:20]) in p.stdout,
              f"the installed package: {p.stdout} {p.stderr[-1500:]}")
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def main():
    if not os.path.exists(LIB):
        print(f"no {LIB}: build it first (make)")
        return 1
    engine = nanochat_c.load(device="cpu")
    check(engine.model.info.max_batch == 8 and engine.model.config.vocab_size == 4096, "defaults")
    for name, fn in [("greedy", lambda: test_greedy(engine)), ("sampling", lambda: test_sampling(engine)),
                     ("many", lambda: test_many(engine)), ("logprobs", test_logprobs),
                     ("tokenizer", lambda: test_tokenizer(engine)), ("errors", lambda: test_errors(engine)),
                     ("8bit", test_8bit), ("deterministic", lambda: test_deterministic(engine)), ("cancel", test_cancel), ("hub", test_hub), ("pip", test_pip_install)]:
        t0 = time.time()
        fn()
        print(f"-- {name}: {time.time() - t0:.1f} s", flush=True)
    engine.close()
    return CK.summary()


if __name__ == "__main__":
    sys.exit(main())
