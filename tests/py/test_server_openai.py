#!/usr/bin/env python3
"""test_server_openai.py: the official `openai` Python client against
`nanochat serve` (issue 5): chat and completions, streaming and not, n > 1,
seeds, stop strings, logprobs, usage, /v1/models, models.retrieve,
/tokenize, /detokenize, the context limit and "truncate" (also with a
system message), the batch gauges when idle.

Reference data: tests/data/server/cases.json, made by PyTorch
(tools/make_server_fixtures.py): prompt token ids as nanochat renders them,
greedy continuations, their text and log-probabilities. Every greedy answer
of the server must equal PyTorch's.
"""
import json
import os
import sys
import time

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import Checker, Server, load_cases  # noqa: E402

# The CPU engine's logits differ from fp32 PyTorch's by up to ~3e-3 on this
# model (4e-4 of the largest logit); log-probabilities inherit that.
LOGPROB_TOL = 5e-3


def finish_of(case):
    return "stop" if case["stopped"] else "length"


def main():
    cases = load_cases()
    maxn = cases["max_new_tokens"]
    ck = Checker("test_server_openai")
    with Server("--max-batch", "16") as srv:
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=60)

        # /v1/models
        models = client.models.list()
        ck.check(len(models.data) == 1 and models.data[0].id == "server", f"models: {models}")
        model = models.data[0].id

        # Chat, not streamed, greedy: text, finish reason and usage equal PyTorch's.
        for i, case in enumerate(cases["chat"]):
            r = client.chat.completions.create(model=model, messages=case["messages"], temperature=0,
                                               max_tokens=maxn)
            ch = r.choices[0]
            ck.check(ch.message.content == case["text"],
                     f"chat {i}: {ch.message.content!r} != reference {case['text']!r}")
            ck.check(ch.finish_reason == finish_of(case), f"chat {i}: finish {ch.finish_reason}")
            ck.check(r.usage.prompt_tokens == len(case["prompt_ids"]),
                     f"chat {i}: prompt_tokens {r.usage.prompt_tokens} != {len(case['prompt_ids'])}")
            ck.check(r.usage.completion_tokens == len(case["greedy_ids"]),
                     f"chat {i}: completion_tokens {r.usage.completion_tokens} != {len(case['greedy_ids'])}")
            ck.check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "total_tokens")
            ck.check(r.object == "chat.completion" and ch.message.role == "assistant", "chat object/role")

        # Chat, streamed, with usage in a last chunk.
        for i, case in enumerate(cases["chat"][:5]):
            stream = client.chat.completions.create(model=model, messages=case["messages"], temperature=0,
                                                    max_tokens=maxn, stream=True,
                                                    stream_options={"include_usage": True})
            text, finish, usage, roles, n_chunks = "", None, None, 0, 0
            for chunk in stream:
                n_chunks += 1
                if chunk.usage:
                    usage = chunk.usage
                    ck.check(chunk.choices == [], "usage chunk has no choices")
                for c in chunk.choices:
                    if c.delta.role:
                        roles += 1
                    text += c.delta.content or ""
                    finish = c.finish_reason or finish
            ck.check(text == case["text"], f"stream chat {i}: {text!r} != {case['text']!r}")
            ck.check(finish == finish_of(case), f"stream chat {i}: finish {finish}")
            ck.check(roles == 1, f"stream chat {i}: {roles} role deltas")
            ck.check(usage is not None and usage.completion_tokens == len(case["greedy_ids"])
                     and usage.prompt_tokens == len(case["prompt_ids"]), f"stream chat {i}: usage {usage}")
            ck.check(n_chunks >= min(len(case["text"]), 3), f"stream chat {i}: only {n_chunks} chunks")

        # Completions: <|bos|> + text, streamed and not.
        for i, case in enumerate(cases["completion"]):
            r = client.completions.create(model=model, prompt=case["prompt"], temperature=0, max_tokens=maxn)
            ck.check(r.choices[0].text == case["text"], f"completion {i}: {r.choices[0].text!r} != {case['text']!r}")
            ck.check(r.choices[0].finish_reason == finish_of(case), f"completion {i}: finish")
            ck.check(r.usage.prompt_tokens == len(case["prompt_ids"]), f"completion {i}: prompt_tokens")
            text = "".join(c.choices[0].text for c in client.completions.create(
                model=model, prompt=case["prompt"], temperature=0, max_tokens=maxn, stream=True) if c.choices)
            ck.check(text == case["text"], f"stream completion {i}: {text!r}")
            # A token-id prompt is used as given.
            r = client.completions.create(model=model, prompt=case["prompt_ids"], temperature=0, max_tokens=maxn)
            ck.check(r.choices[0].text == case["text"], f"completion ids {i}: {r.choices[0].text!r}")
        r = client.completions.create(model=model, prompt=cases["completion"][0]["prompt"], temperature=0,
                                      max_tokens=5, echo=True)
        ck.check(r.choices[0].text.startswith(cases["completion"][0]["prompt"]), f"echo: {r.choices[0].text!r}")

        # max_tokens cuts the reference short, with finish_reason "length".
        long_case = next(c for c in cases["chat"] if not c["stopped"])
        r = client.chat.completions.create(model=model, messages=long_case["messages"], temperature=0,
                                           max_completion_tokens=7)
        ck.check(r.choices[0].message.content == long_case["text"][:7] and r.choices[0].finish_reason == "length"
                 and r.usage.completion_tokens == 7, f"max_completion_tokens 7: {r.choices[0]}")

        # n > 1: greedy choices all equal the reference; sampled ones follow the seed.
        r = client.chat.completions.create(model=model, messages=long_case["messages"], temperature=0,
                                           max_tokens=20, n=3)
        ck.check(len(r.choices) == 3 and sorted(c.index for c in r.choices) == [0, 1, 2], "n=3 indices")
        ck.check(all(c.message.content == long_case["text"][:20] for c in r.choices), "n=3 greedy choices")
        ck.check(r.usage.completion_tokens == 60, f"n=3 usage {r.usage}")
        kw = dict(model=model, messages=cases["chat"][1]["messages"], temperature=1.0, max_tokens=24, n=4, seed=1234)
        a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
        ck.check([c.message.content for c in a.choices] == [c.message.content for c in b.choices],
                 "same seed, same samples")
        ck.check(len({c.message.content for c in a.choices}) > 1, f"n=4 samples all equal: {a.choices}")
        streamed = ["", "", "", ""]
        for chunk in client.chat.completions.create(stream=True, **kw):
            for c in chunk.choices:
                streamed[c.index] += c.delta.content or ""
        ck.check(streamed == [c.message.content for c in a.choices], "n=4 streamed == not streamed")

        # Stop strings are matched on the text, across token boundaries (every
        # token of this model is one byte), and never reach the client.
        text = long_case["text"]
        stop = text[20:23]
        cut = text.find(stop)
        r = client.chat.completions.create(model=model, messages=long_case["messages"], temperature=0,
                                           max_tokens=maxn, stop=[stop, "\u2603never"])
        ck.check(r.choices[0].message.content == text[:cut] and r.choices[0].finish_reason == "stop",
                 f"stop {stop!r}: {r.choices[0].message.content!r} (want {text[:cut]!r})")
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=model, messages=long_case["messages"], temperature=0, max_tokens=maxn, stop=stop, stream=True)
            if c.choices)
        ck.check(streamed == text[:cut], f"streamed stop: {streamed!r} (want {text[:cut]!r})")
        r = client.completions.create(model=model, prompt=cases["completion"][0]["prompt"], temperature=0,
                                      max_tokens=maxn, stop=cases["completion"][0]["text"][3:5])
        want = cases["completion"][0]["text"]
        ck.check(r.choices[0].text == want[:want.find(want[3:5])], f"completion stop: {r.choices[0].text!r}")

        # Logprobs equal PyTorch's log_softmax of the softcapped logits.
        case = long_case
        r = client.chat.completions.create(model=model, messages=case["messages"], temperature=0, max_tokens=16,
                                           logprobs=True, top_logprobs=5)
        content = r.choices[0].logprobs.content
        ck.check(len(content) == 16, f"logprobs: {len(content)} entries")
        for k, (got, ref) in enumerate(zip(content, case["logprobs"])):
            ck.check(got.bytes == [case["greedy_ids"][k]], f"logprob {k}: bytes {got.bytes}")
            ck.check(abs(got.logprob - ref["logprob"]) < LOGPROB_TOL, f"logprob {k}: {got.logprob} vs {ref['logprob']}")
            ck.check(len(got.top_logprobs) == 5, f"top_logprobs {k}: {len(got.top_logprobs)}")
            for t, (tid, tlp) in zip(got.top_logprobs, zip(ref["top_ids"], ref["top_logprobs"])):
                ck.check(t.bytes == [tid] or abs(t.logprob - tlp) < LOGPROB_TOL,
                         f"top {k}: {t.bytes} {t.logprob} vs {tid} {tlp}")
                ck.check(abs(t.logprob - tlp) < LOGPROB_TOL, f"top {k}: {t.logprob} vs {tlp}")
        streamed_lp = []
        for chunk in client.chat.completions.create(model=model, messages=case["messages"], temperature=0,
                                                    max_tokens=16, logprobs=True, stream=True):
            for c in chunk.choices:
                if c.logprobs and c.logprobs.content:
                    streamed_lp += [e.logprob for e in c.logprobs.content]
        ck.check(len(streamed_lp) == 16 and all(abs(a - b["logprob"]) < LOGPROB_TOL
                                                for a, b in zip(streamed_lp, case["logprobs"])),
                 f"streamed logprobs {streamed_lp[:4]}")
        ccase = cases["completion"][0]
        r = client.completions.create(model=model, prompt=ccase["prompt"], temperature=0, max_tokens=8, logprobs=3)
        lp = r.choices[0].logprobs
        ck.check(len(lp.token_logprobs) == 8 and all(abs(a - b["logprob"]) < LOGPROB_TOL
                                                     for a, b in zip(lp.token_logprobs, ccase["logprobs"])),
                 f"completion logprobs {lp.token_logprobs}")
        ck.check(lp.text_offset == list(range(8)) and all(len(t) == 3 for t in lp.top_logprobs),
                 f"completion logprob offsets {lp.text_offset}")

        # /tokenize renders chats as nanochat does; /detokenize inverts ids.
        for case in cases["chat"][:4]:
            status, body = srv.post("/tokenize", {"messages": case["messages"]})
            ck.check(status == 200 and json.loads(body)["tokens"] == case["prompt_ids"], f"tokenize {body[:80]}")
        status, body = srv.post("/detokenize", {"tokens": cases["completion"][0]["prompt_ids"][1:]})
        ck.check(status == 200 and json.loads(body)["prompt"] == cases["completion"][0]["prompt"], f"detokenize {body}")

        # The context limit (256): a 300-token prompt is a 400 naming it, unless truncated.
        long_text = "ab " * 100
        try:
            client.completions.create(model=model, prompt=long_text, max_tokens=4)
            ck.check(False, "over-long prompt accepted")
        except openai.BadRequestError as e:
            ck.check("256" in str(e) and e.status_code == 400, f"context error: {e}")
        r = client.completions.create(model=model, prompt=long_text, max_tokens=4, extra_body={"truncate": True})
        ck.check(r.usage.prompt_tokens == 255 and r.choices[0].finish_reason == "length",
                 f"truncated: {r.usage}")
        # "truncate" with a system message (issue 11): the system message stays,
        # the oldest whole turns after it go, exactly as when the client sends
        # the shortened chat itself.
        def tokens(messages):
            status, body = srv.post("/tokenize", {"messages": messages})
            return json.loads(body)["count"]

        system = {"role": "system", "content": "You answer briefly."}
        turns = []
        for k in range(11):
            turns += [{"role": "user", "content": f"question {k}: " + "tell me about it " * 3},
                      {"role": "assistant", "content": f"answer {k}: " + "it is so " * 3}]
        chat = [system] + turns + [{"role": "user", "content": "and now?"}]
        ck.check(tokens(chat) > 256, f"the test chat fits the context ({tokens(chat)} tokens)")
        first = next(i for i in range(1, len(chat), 2) if tokens([system] + chat[i:]) < 256)
        kept = [system] + chat[first:]
        want = client.chat.completions.create(model=model, messages=kept, temperature=0, max_tokens=8)
        try:
            got = client.chat.completions.create(model=model, messages=chat, temperature=0, max_tokens=8,
                                                 extra_body={"truncate": True})
            ck.check(got.choices[0].message.content == want.choices[0].message.content and
                     got.usage.prompt_tokens == want.usage.prompt_tokens == tokens(kept),
                     f"truncated chat: {got.usage} {got.choices[0].message.content!r} vs {want.usage} "
                     f"{want.choices[0].message.content!r}")
        except openai.APIError as e:
            ck.check(False, f"truncate with a system message: {e}")
        status, body = srv.post("/chat/completions", {"messages": chat, "temperature": 0, "max_tokens": 8,
                                                      "truncate": True})
        text = "".join(json.loads(x[6:]).get("token", "") for x in body.decode().split("\n\n") if x.startswith("data: "))
        ck.check(status == 200 and text == want.choices[0].message.content,
                 f"nanochat route, truncate with a system message: {status} {body[:160]!r}")
        # The last turn alone is too long: truncate cannot help, and says so.
        for route in ("/v1/chat/completions", "/chat/completions"):
            status, body = srv.post(route, {"messages": [system, {"role": "user", "content": "many words " * 200}],
                                            "truncate": True})
            err = json.loads(body).get("error", {})
            ck.check(status == 400 and err.get("code") == "context_length_exceeded" and "256" in err["message"] and
                     "last" in err["message"] and '"truncate": true' not in err["message"],
                     f"{route}: last message alone too long with truncate: {status} {body[:240]!r}")

        # models.retrieve (GET /v1/models/{id}); an unknown id is OpenAI's 404.
        try:
            m = client.models.retrieve(model)
            ck.check(m.id == model and m.object == "model", f"models.retrieve: {m}")
        except openai.APIError as e:
            ck.check(False, f"models.retrieve({model!r}): {e}")
        for unknown in ("no-such-model", "owner/name"):
            try:
                client.models.retrieve(unknown)
                ck.check(False, f"unknown model {unknown} found")
            except openai.NotFoundError as e:
                ck.check(e.body and e.body.get("code") == "model_not_found" and unknown in e.body.get("message", ""),
                         f"unknown model {unknown}: {e.body}")

        # Nothing runs now: the batch gauges read 0, not the last step's size.
        deadline = time.time() + 5
        while (m := srv.metrics())["nanochat_running_requests"] != 0 and time.time() < deadline:
            time.sleep(0.02)
        ck.check(m["nanochat_batch_size"] == 0 and m["nanochat_batch_tokens"] == 0,
                 f"idle batch gauges: size {m['nanochat_batch_size']}, tokens {m['nanochat_batch_tokens']}")
        # Wrong types are 400s in OpenAI's error shape.
        try:
            client.chat.completions.create(model=model, messages=case["messages"], temperature="warm")
            ck.check(False, "temperature 'warm' accepted")
        except openai.BadRequestError as e:
            ck.check(e.body and e.body.get("param") == "temperature", f"type error body: {e.body}")
        ck.check(srv.alive(), "server alive")
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
