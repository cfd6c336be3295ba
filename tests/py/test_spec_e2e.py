#!/usr/bin/env python3
"""test_spec_e2e.py: speculative decoding through the real CLI and server
with the bundled picochat model on the CPU (docs/speculative.md).

References: tests/data/picochat/golden.json (PyTorch's greedy transcripts,
made by tools/train_picochat.py; a difference is accepted only at a
reference near-tie, as test_picochat_e2e accepts) and the engine's own
output with --no-spec / "speculative": false (speculation must not change
a token, greedy or sampled with a seed). Speculation is forced with
--spec-always (on this CPU the engine finds that verifying positions does
not pay for picochat, and would rarely draft), with prompt lookup and with
picochat drafting for itself (--draft-model); --spec (the default here,
which a GPU needs to speculate) runs priced lookup.

  - CLI (`chat --json`): the golden cases, greedy and sampled, in every
    mode; --verbose reports accepted drafts; refusals: a draft model with
    another tokenizer (one line naming it), a missing draft model, bad
    flag values;
  - server: golden conversations all at once, half of them with
    "speculative": false, through the OpenAI API (content, finish_reason,
    usage, logprobs), streaming against blocking, stop strings, n = 2 with
    a seed, a bad "speculative" value (400), the drafted/accepted counters
    of /metrics; a server whose draft model has another tokenizer exits
    with the reason;
  - server with two CPU engines (--devices cpu,cpu --draft-model): each
    engine speculates with its own draft backend (replies as with
    "speculative": false, both engines' labelled counters drafted).
"""
import http.client
import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import NC_BIN, ROOT, Checker, Server, sse_events  # noqa: E402

MODEL = os.path.join(ROOT, "models", "picochat")
GOLDEN = os.path.join(ROOT, "tests", "data", "picochat", "golden.json")
OTHER_TOKENIZER = os.path.join(ROOT, "tests", "data", "server")  # a model with its own tokenizer
TIE = 1e-3
ALWAYS = ["--spec-always"]
MODES = {
    "lookup": ALWAYS,
    "self-draft": ALWAYS + ["--draft-model", MODEL, "--spec-ngram", "0"],
    "lookup+draft": ALWAYS + ["--draft-model", MODEL],
    "priced (--spec)": ["--spec"],  # the default on the CPU, asked for as on a GPU
}


def run_all(calls, fn):
    """Runs fn(*args) for every args in calls at once, in threads started in that order."""
    threads = [threading.Thread(target=fn, args=args) for args in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def chat(case, extra, temperature=0.0, seed=42, verbose=False):
    msgs = list(case["messages"])
    args = [NC_BIN, "chat", "-m", MODEL, "--device", "cpu", "--json", "--temperature", str(temperature),
            "--seed", str(seed), "--max-tokens", str(case["max_tokens"]), *extra]
    if msgs[0]["role"] == "system":
        args += ["--system", msgs.pop(0)["content"]]
    if verbose:
        args.append("--verbose")
    p = subprocess.run(args + ["-p", msgs[-1]["content"]], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout), p.stderr


def golden_differs(case, tokens):
    """None if `tokens` (terminal included) match PyTorch's up to a near-tie, else a message."""
    want = case["tokens"]
    got = tokens[:-1] if tokens and len(tokens) == len(want) + 1 else tokens
    i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
    if got == want:
        return None
    margins = case["margins"]
    if i < len(margins) and margins[i] is not None and margins[i] < TIE:
        return None
    return f"token {i}: {got[i:i + 5]} vs PyTorch's {want[i:i + 5]}"


def test_cli(ck, cases):
    accepted = {}
    for case in cases:
        plain, _ = chat(case, ["--no-spec"])
        ck.check(golden_differs(case, plain["tokens"]) is None,
                 f"{case['name']} without speculation: {golden_differs(case, plain['tokens'])}")
        sampled, _ = chat(case, ["--no-spec"], temperature=1.5, seed=11)
        for mode, extra in MODES.items():
            out, err = chat(case, extra, verbose=True)
            ck.check(out["tokens"] == plain["tokens"] and out["finish_reason"] == plain["finish_reason"],
                     f"{case['name']} {mode}: greedy differs from --no-spec")
            for line in err.splitlines():
                if line.startswith("speculation:"):
                    accepted[mode] = accepted.get(mode, 0) + sum(
                        int(w.split("/")[0]) for w in line.split() if "/" in w and w.split("/")[0].isdigit())
            out, _ = chat(case, extra, temperature=1.5, seed=11)
            ck.check(out["tokens"] == sampled["tokens"], f"{case['name']} {mode}: sampled (seed 11) differs")
    for mode, extra in MODES.items():  # priced lookup may find nothing worth verifying on a busy machine
        if "--spec-always" in extra:
            ck.check(accepted.get(mode, 0) > 0, f"{mode}: --verbose reported no accepted draft")
    print(f"cli: {len(cases)} cases x {len(MODES)} modes; accepted drafts {accepted}")


def expect_refusal(ck, what, args, needle, code=1):
    p = subprocess.run([NC_BIN, *args], capture_output=True, text=True, timeout=60)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    ck.check(p.returncode == code and len(lines) == 1 and needle in lines[0] and not p.stdout,
             f"{what}: exit {p.returncode}, stderr {p.stderr.strip()!r}")


def test_cli_refusals(ck):
    expect_refusal(ck, "draft with another tokenizer", ["chat", "-m", MODEL, "-p", "hi", "--draft-model",
                   OTHER_TOKENIZER], "must share its tokenizer")
    expect_refusal(ck, "generate, draft with another tokenizer", ["generate", "-m", MODEL, "-p", "hi",
                   "--draft-model", OTHER_TOKENIZER], "must share its tokenizer")
    expect_refusal(ck, "missing draft model", ["chat", "-m", MODEL, "-p", "hi", "--draft-model",
                   os.path.join(ROOT, "no-such-draft")], "no-such-draft")
    expect_refusal(ck, "--spec-k 0", ["chat", "-p", "hi", "--spec-k", "0"], "--spec-k", code=2)
    expect_refusal(ck, "--spec-ngram 9", ["chat", "-p", "hi", "--spec-ngram", "9"], "--spec-ngram", code=2)
    expect_refusal(ck, "--draft-model without a value", ["chat", "-p", "hi", "--draft-model"], "--draft-model",
                   code=2)


def openai(srv, body):
    status, data = srv.post("/v1/chat/completions", body)
    return status, json.loads(data)


def test_server(ck, cases):
    with Server(*ALWAYS, "--draft-model", MODEL, model=("-m", MODEL), ready_timeout=120) as srv:
        results = {}

        def ask(i, case, spec):
            body = {"messages": case["messages"], "temperature": 0, "max_tokens": case["max_tokens"],
                    "logprobs": True, "top_logprobs": 2}
            if not spec:
                body["speculative"] = False
            results[(i, spec)] = openai(srv, body)

        run_all([(i, c, spec) for i, c in enumerate(cases) for spec in (True, False)], ask)
        for i, case in enumerate(cases):
            (s1, a), (s2, b) = results[(i, True)], results[(i, False)]
            ok = s1 == 200 and s2 == 200
            ck.check(ok, f"{case['name']}: status {s1} / {s2}")
            if not ok:
                continue
            ca, cb = a["choices"][0], b["choices"][0]
            ua, ub = a["usage"], b["usage"]  # cached_tokens: whichever came second may reuse the other's prompt
            ck.check(ca["message"]["content"] == cb["message"]["content"] and
                     ca["finish_reason"] == cb["finish_reason"] and
                     (ua["prompt_tokens"], ua["completion_tokens"]) == (ub["prompt_tokens"], ub["completion_tokens"]),
                     f"{case['name']}: speculative and plain replies differ")
            ck.check(ca["logprobs"] == cb["logprobs"], f"{case['name']}: logprobs differ")

        # streaming against blocking, and a stop string in the middle of the reply
        case = next(c for c in cases if c["name"] == "hello")
        body = {"messages": case["messages"], "temperature": 0, "max_tokens": 64}
        _, whole = openai(srv, body)
        text = whole["choices"][0]["message"]["content"]
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in sse_events(resp)
                           if e != "[DONE]" and e.get("choices"))
        conn.close()
        ck.check(resp.status == 200 and streamed == text, f"streamed {streamed!r} vs blocking {text!r}")
        stop = text.split()[2]
        for spec in (True, False):
            _, out = openai(srv, {**body, "stop": [stop], "speculative": spec})
            c = out["choices"][0]
            ck.check(c["message"]["content"] == text[:text.index(stop)] and c["finish_reason"] == "stop",
                     f"stop {stop!r} (speculative {spec}): {c['message']['content']!r} {c['finish_reason']}")

        # n = 2 with a seed: the same samples either way
        body = {"messages": cases[0]["messages"], "temperature": 1.5, "max_tokens": 40, "n": 2, "seed": 5}
        _, a = openai(srv, body)
        _, b = openai(srv, {**body, "speculative": False})
        ck.check([c["message"]["content"] for c in a["choices"]] == [c["message"]["content"] for c in b["choices"]],
                 "n = 2, seed 5: speculative and plain samples differ")

        status, out = openai(srv, {"messages": cases[0]["messages"], "speculative": "yes"})
        ck.check(status == 400 and out["error"]["param"] == "speculative", f"'speculative': 'yes' -> {status} {out}")

        m = srv.metrics()
        for method in ("lookup", "draft_model"):
            drafted = m.get(f'nanochat_spec_draft_tokens_total{{method="{method}"}}', 0)
            acc = m.get(f'nanochat_spec_accepted_tokens_total{{method="{method}"}}', 0)
            ck.check(drafted > 0 and 0 < acc <= drafted, f"/metrics {method}: {acc} of {drafted} accepted")
        ck.check(m.get("nanochat_spec_emitted_tokens_total", 0) > m.get("nanochat_spec_verify_steps_total", 0) > 0,
                 "/metrics: no step emitted more than one token")

    p = subprocess.run([NC_BIN, "serve", "-m", MODEL, "--device", "cpu", "--port", "0", "--draft-model",
                        OTHER_TOKENIZER], capture_output=True, text=True, timeout=120)
    ck.check(p.returncode != 0 and "must share its tokenizer" in p.stderr,
             f"serve with a mismatched draft: exit {p.returncode}, {p.stderr.strip()[-300:]!r}")


def test_server_engines(ck, cases):
    with Server(*ALWAYS, "--draft-model", MODEL, "--devices", "cpu,cpu", "--threads", "2", model=("-m", MODEL),
                ready_timeout=120) as srv:
        results = {}

        def ask(i, case, spec):
            body = {"messages": case["messages"], "temperature": 0, "max_tokens": case["max_tokens"],
                    "speculative": spec}
            results[(i, spec)] = openai(srv, body)

        # the speculative ones first: the router alternates between idle engines, both get some
        run_all([(i, c, spec) for spec in (True, False) for i, c in enumerate(cases)], ask)
        for i, case in enumerate(cases):
            (s1, a), (s2, b) = results[(i, True)], results[(i, False)]
            ck.check(s1 == 200 and s2 == 200 and
                     a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"],
                     f"two engines, {case['name']}: speculative and plain replies differ ({s1} / {s2})")
        m = srv.metrics()
        for engine in (0, 1):
            labels = f'engine="{engine}",device="cpu"'
            drafted = m.get(f'nanochat_spec_draft_tokens_total{{{labels},method="draft_model"}}', 0)
            emitted = m.get(f"nanochat_spec_emitted_tokens_total{{{labels}}}", 0)
            ck.check(drafted > 0 and emitted > 0,
                     f"/metrics engine {engine}: the draft model drafted {drafted}, emitted {emitted}")


def main():
    if not os.access(NC_BIN, os.X_OK):
        print(f"no binary at {NC_BIN}: build it first (make)")
        return 1
    if not os.path.exists(GOLDEN) or not os.path.isdir(MODEL):
        print("skipped: models/picochat or its golden transcripts are not in this checkout")
        return 77
    with open(GOLDEN) as f:
        cases = [c for c in json.load(f)["cases"] if len(c["messages"]) <= 2]
    ck = Checker("test_spec_e2e")
    test_cli(ck, cases[:8])
    test_cli_refusals(ck)
    test_server(ck, cases[:12])
    test_server_engines(ck, cases[:8])
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
