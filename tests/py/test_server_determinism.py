#!/usr/bin/env python3
"""test_server_determinism.py: a seeded request gives the same tokens and the
same log-probabilities whatever else the server is running (issue 18; CPU
backend: docs/performance.md, CPU backend).

Model: the bundled picochat. The target is issue 18's request on
/v1/completions (temperature 1.5, top_k 0, seed 2) with logprobs=5.
Reference: the target alone on a --threads 1 server. Then, on servers with
--threads 1 and --threads 2:
  - the target sent together with 8..15 other requests (random prompts,
    temperatures, lengths, n) that start at random moments, three times (the
    later rounds find its prompt in the prefix cache, which the response's
    cached_tokens confirms);
  - n = 3 with seed 5: choice i equals the n = 1 request with seed 5 + i.
Every response must match the reference exactly: text, tokens, chosen and
top log-probs as the server prints them.
"""
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import ROOT, Checker, Server  # noqa: E402

MODEL = ("-m", os.path.join(ROOT, "models", "picochat"))
TARGET = {"prompt": "Once upon a time", "max_tokens": 60, "temperature": 1.5, "top_k": 0, "seed": 2, "logprobs": 5}
WORDS = "the a cat dog ran sat on under over big small red blue why how when seven plus two".split()


def complete(srv, body):
    status, data = srv.post("/v1/completions", body)
    if status != 200:
        return {"error": f"HTTP {status}: {data[:200]!r}"}
    return json.loads(data)


def essence(choice):
    """What must not change: the text and every log-prob field."""
    lp = choice.get("logprobs") or {}
    return choice.get("text"), lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")


def crowd(srv, rng, n_others):
    """The target plus n_others random requests, each starting after a random
    delay; returns the target's response."""
    results = {}

    def run(key, body, delay):
        time.sleep(delay)
        results[key] = complete(srv, body)

    jobs = [("target", TARGET, rng.uniform(0, 0.3))]
    for i in range(n_others):
        body = {"prompt": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))),
                "max_tokens": rng.randint(1, 80), "temperature": rng.choice([0, 0.7, 1.0, 1.5]),
                "seed": rng.randint(0, 1000), "n": rng.randint(1, 3)}
        if rng.random() < 0.5:
            body["logprobs"] = 2
        jobs.append((i, body, rng.uniform(0, 0.5)))
    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results["target"]


def main():
    ck = Checker("test_server_determinism")
    rng = random.Random(18)
    with Server(*MODEL, "--threads", "1") as srv:
        ref = complete(srv, TARGET)
        if not ck.check("choices" in ref, f"reference: {ref}"):
            return ck.summary()
        ref = essence(ref["choices"][0])
        ck.check(ref[2] and len(ref[2]) > 10, f"reference has {len(ref[2] or [])} log-probs")
        singles = [essence(complete(srv, dict(TARGET, seed=5 + i))["choices"][0]) for i in range(3)]
    for threads in ("1", "2"):
        with Server(*MODEL, "--threads", threads, "--max-batch", "16") as srv:
            for round_ in range(3):
                got = crowd(srv, rng, rng.randint(8, 15))
                if not ck.check("choices" in got, f"{threads} threads, round {round_}: {got}"):
                    continue
                ck.check(essence(got["choices"][0]) == ref,
                         f"{threads} threads, round {round_}: the target's text or log-probs changed in a crowd")
                cached = got.get("usage", {}).get("prompt_tokens_details", {}).get("cached_tokens", 0)
                ck.check(round_ == 0 or cached > 0, f"{threads} threads, round {round_}: no cached prompt tokens")
            multi = complete(srv, dict(TARGET, seed=5, n=3))
            if ck.check("choices" in multi, f"n = 3: {multi}"):
                by_index = {c["index"]: essence(c) for c in multi["choices"]}
                for i in range(3):
                    ck.check(by_index.get(i) == singles[i], f"{threads} threads: n = 3 choice {i} != seed {5 + i} alone")
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
