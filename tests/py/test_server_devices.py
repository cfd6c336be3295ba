#!/usr/bin/env python3
"""test_server_devices.py: one server, several engines (`--devices cpu,cpu`;
issue 17, docs/multi-device.md).

  - /health, /stats and /metrics list each engine (metrics labelled by
    engine and device).
  - Routing by load: a request that arrives while another engine is busy
    goes to the idle one (X-Nanochat-Engine, per-engine running requests).
  - Cancellation: clients that leave free their rows on both engines.
  - Affinity: every turn of a conversation keyed by X-Session-Id or OpenAI's
    `user` stays on its engine even when the other one is less loaded, and
    that engine's prefix-cache hits rise by exactly the follow-up turns; a
    conversation without a key follows its cached prefix the same way.
  - SIGTERM while both engines stream: both streams end properly, exit 0.
  - An engine whose device fails mid-stream (NC_DEBUG_FAIL_ENGINE, the
    debug switch): its stream gets an error event, /health and /metrics
    show it stopped, and every later request is served by the other one; a
    lone engine gives up after three failed steps in a row and the server
    exits with an error.
  - The bundle options reach every engine: with --weights int8 --kv-cache
    fp8 both engines say so, each one's greedy reply equals `nanochat chat`'s
    with the same flags, and its first log-probability differs from the
    float engines' (so an option dropped on the way cannot pass by the
    models agreeing on the argmax).
  - Bad --devices values and a device that does not exist end the server
    with a one-line error naming the problem.

The model is a random 4,512,4 (greedy: its replies never end early on a
stop token) with a 65536-token tokenizer, so generations are long enough
to overlap on this CPU.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import JSON, NC_BIN, Checker, Server, make_big_tokenizer, sse_events  # noqa: E402

MODEL = ("--random", "4,512,4")
LONG_TEXT = " ".join(f"word{i}" for i in range(120))  # well over one 64-token KV block


class Stream:
    """A streaming /v1/completions request read on its own thread."""

    def __init__(self, port, max_tokens, prompt="go", headers=None):
        self.events, self.engine, self.error = [], None, None
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        self.conn.request("POST", "/v1/completions", json.dumps(body), {**JSON, **(headers or {})})
        self.sock = self.conn.sock  # the response takes it over
        self.resp = self.conn.getresponse()
        self.engine = self.resp.getheader("X-Nanochat-Engine")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for ev in sse_events(self.resp):
                self.events.append(ev)
        except Exception as e:  # a closed connection ends the reading; checks look at events
            self.error = repr(e)

    def wait_tokens(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.events) < n and self.thread.is_alive():
            time.sleep(0.01)
        return len(self.events) >= n

    def close(self):
        """Leaves, as a client that goes away does."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(timeout=10)
        self.resp.close()

    def finished(self):
        """The finish reason the stream ended with, or None."""
        for ev in self.events:
            if isinstance(ev, dict) and ev.get("choices") and ev["choices"][0].get("finish_reason"):
                return ev["choices"][0]["finish_reason"]
        return None


def engine_series(metrics, name, engine):
    return metrics.get(f'{name}{{engine="{engine}",device="cpu"}}')


def wait_for(cond, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    return None


def chat(srv, messages, headers=None, user=None):
    """A whole chat completion: (engine, reply text, usage)."""
    body = {"messages": messages, "max_tokens": 6, "temperature": 0}
    if user:
        body["user"] = user
    status, data, resp = srv.request("POST", "/v1/chat/completions", body, headers)
    assert status == 200, (status, data[:200])
    out = json.loads(data)
    return resp.getheader("X-Nanochat-Engine"), out["choices"][0]["message"]["content"], out["usage"]


def check_listing(ck, srv):
    h = json.loads(srv.get("/health")[1])
    ck.check(h["ready"] and h["num_gpus"] == 2 and h["available_workers"] == 2 and len(h["engines"]) == 2 and
             all(e["state"] == "ready" and e["device"] == "cpu" and e["description"].startswith("cpu:")
                 for e in h["engines"]), f"/health: {h}")
    st = json.loads(srv.get("/stats")[1])
    ck.check(st["total_workers"] == 2 and [e["engine"] for e in st["engines"]] == [0, 1] and
             all(e["scheduler"]["kv_blocks_total"] > 0 for e in st["engines"]) and
             st["scheduler"]["kv_blocks_total"] == sum(e["scheduler"]["kv_blocks_total"] for e in st["engines"]),
             f"/stats: {st}")
    m = srv.metrics()
    ck.check(all(engine_series(m, "nanochat_engine_up", k) == 1 and
                 engine_series(m, "nanochat_kv_blocks_total", k) > 0 for k in (0, 1)) and
             "nanochat_queue_depth" not in m, "per-engine metrics carry engine and device labels")


def check_load_and_cancel(ck, srv):
    before = srv.metrics()
    a = Stream(srv.port, 1500)
    ck.check(a.wait_tokens(2), "the first stream produced nothing")
    b = Stream(srv.port, 1500)
    ck.check(b.wait_tokens(2), "the second stream produced nothing")
    ck.check({a.engine, b.engine} == {"0", "1"}, f"two long requests on engines {a.engine} and {b.engine}")
    m = srv.metrics()
    ck.check(all(engine_series(m, "nanochat_running_requests", k) == 1 for k in (0, 1)),
             "one running request on each engine")
    a.close()
    b.close()
    idle = wait_for(lambda: (lambda m: m if all(engine_series(m, "nanochat_running_requests", k) == 0 and
                                                engine_series(m, "nanochat_kv_blocks_used", k) == 0
                                                for k in (0, 1)) else None)(srv.metrics()))
    ck.check(idle is not None, "the cancelled requests' rows and blocks were freed on both engines")
    if idle:
        ck.check(idle["nanochat_requests_cancelled_total"] - before["nanochat_requests_cancelled_total"] == 2,
                 "two cancellations counted")
        h = json.loads(srv.get("/health")[1])
        ck.check(all(e["outstanding_rows"] == 0 for e in h["engines"]), f"load given back: {h['engines']}")


def hold_engine(srv, engine, name):
    """A long stream on `engine` (and none elsewhere): streams go to the
    least loaded engine, so a stream that lands elsewhere is kept open
    until one lands here, then closed."""
    hold, others = None, []
    for i in range(6):
        s = Stream(srv.port, 1500, prompt=f"busy {name} {i}")
        s.wait_tokens(2)
        if s.engine == engine:
            hold = s
            break
        others.append(s)
    for s in others:
        s.close()
    return hold


def conversation(srv, turns, key_kind, name):
    """Runs `turns` turns of one conversation; returns their engines. A
    long stream holds the engine of the first turn while the later turns
    are sent, so the least loaded engine is always the other one."""
    headers = {"X-Session-Id": name} if key_kind == "header" else None
    user = name if key_kind == "user" else None
    messages = [{"role": "user", "content": f"{name}: {LONG_TEXT}"}]
    engines, hold = [], None
    for t in range(turns):
        engine, reply, _ = chat(srv, messages, headers, user)
        engines.append(engine)
        if t == 0:
            hold = hold_engine(srv, engine, name)
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": f"turn {t}"}]
    if hold:
        hold.close()
    return engines, hold is not None


def check_affinity(ck, srv):
    for kind in ("header", "user", "prefix"):
        before = srv.metrics()
        engines, held = conversation(srv, 3, kind, f"conv-{kind}")
        after = srv.metrics()
        ck.check(len(set(engines)) == 1, f"{kind}: turns on engines {engines}")
        ck.check(held, f"{kind}: the other engine was not the less loaded one (no hold on engine {engines[0]})")
        k = engines[0]
        hits = [engine_series(after, "nanochat_prefix_cache_hits_total", e) -
                engine_series(before, "nanochat_prefix_cache_hits_total", e) for e in (0, 1)]
        ck.check(hits[int(k)] == 2 and hits[1 - int(k)] == 0, f"{kind}: prefix hits per engine {hits}, want 2 on {k}")
        wait_for(lambda: all(engine_series(srv.metrics(), "nanochat_running_requests", e) == 0 for e in (0, 1)))


def check_drain(ck, srv):
    streams = [Stream(srv.port, 150, prompt=f"drain {k}") for k in range(2)]
    for s in streams:
        s.wait_tokens(2)
    ck.check({s.engine for s in streams} == {"0", "1"}, f"drain streams on {[s.engine for s in streams]}")
    srv.proc.send_signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    for s in streams:
        s.thread.join(timeout=10)
    ck.check(code == 0, f"exit status after SIGTERM: {code}")
    ck.check(all(s.events and s.events[-1] == "[DONE]" and s.finished() == "length" for s in streams),
             f"both streams finished during the drain: {[(s.finished(), s.events[-1:]) for s in streams]}")


QUANT_FLAGS = ("--weights", "int8", "--kv-cache", "fp8")
QUANT_PROMPT = "hello there"


def first_logprob(srv):
    """(engine, reply, log-probability of its first token) of QUANT_PROMPT, greedy."""
    body = {"messages": [{"role": "user", "content": QUANT_PROMPT}], "max_tokens": 6, "temperature": 0,
            "logprobs": True}
    status, data, resp = srv.request("POST", "/v1/chat/completions", body)
    assert status == 200, (status, data[:200])
    choice = json.loads(data)["choices"][0]
    first = choice["logprobs"]["content"][0]["logprob"]
    return resp.getheader("X-Nanochat-Engine"), choice["message"]["content"], first


def check_bundle_options(ck, tok, float_logprob):
    p = subprocess.run([NC_BIN, "chat", *MODEL, "--tokenizer", tok, "--device", "cpu", "--json", "--temperature", "0",
                        "--max-tokens", "6", "-p", QUANT_PROMPT, *QUANT_FLAGS], capture_output=True, text=True,
                       timeout=120)
    cli = json.loads(p.stdout)["text"] if p.returncode == 0 else None
    ck.check(cli, f"nanochat chat {' '.join(QUANT_FLAGS)}: {p.stderr[-300:]}")
    with Server("--tokenizer", tok, "--devices", "cpu,cpu", "--threads", "2", *QUANT_FLAGS, model=MODEL) as srv:
        h = json.loads(srv.get("/health")[1])
        ck.check(all("int8" in e["description"] and "fp8 KV" in e["description"] for e in h["engines"]),
                 f"both engines run int8 weights and the fp8 cache: {[e['description'] for e in h['engines']]}")
        # Idle engines take turns (the prompt is shorter than a cached block), so a few requests reach both.
        replies = {}
        for _ in range(6):
            engine, reply, lp = first_logprob(srv)
            replies.setdefault(engine, (reply, lp))
        ck.check(set(replies) == {"0", "1"}, f"requests reached engines {sorted(replies)}")
        for engine, (reply, lp) in sorted(replies.items()):
            ck.check(reply == cli, f"engine {engine}: {reply!r}, the CLI with the same flags: {cli!r}")
            ck.check(lp != float_logprob, f"engine {engine}: first log-prob {lp} equals the float engines'")


def check_failed_engine(ck, tok):
    env = {**os.environ, "NC_DEBUG_FAIL_ENGINE": "1:6"}
    with Server("--tokenizer", tok, "--devices", "cpu,cpu", "--threads", "2", model=MODEL, env=env) as srv:
        a = Stream(srv.port, 1500, prompt="healthy")
        a.wait_tokens(2)
        b = Stream(srv.port, 40, prompt="doomed")
        b.thread.join(timeout=30)
        ck.check(a.engine == "0" and b.engine == "1", f"engines {a.engine}, {b.engine}")
        errors = [ev for ev in b.events if isinstance(ev, dict) and "error" in ev]
        tokens = [ev for ev in b.events if isinstance(ev, dict) and ev.get("choices")]
        ck.check(len(tokens) >= 3 and errors and "NC_DEBUG_FAIL_ENGINE" in errors[0]["error"]["message"] and
                 b.events[-1] == "[DONE]", f"the failed stream: {len(tokens)} token chunks, then {b.events[-2:]}")
        h = json.loads(srv.get("/health")[1])
        e1 = h["engines"][1]
        ck.check(h["ready"] and h["available_workers"] == 1 and e1["state"] == "failed" and
                 "NC_DEBUG_FAIL_ENGINE" in (e1["error"] or "") and "engine 1 (cpu)" in e1["error"],
                 f"/health after the failure: {h}")
        ck.check(srv.get("/health?ready")[0] == 200, "still ready with one engine serving")
        ck.check(engine_series(srv.metrics(), "nanochat_engine_up", 1) == 0, "nanochat_engine_up of engine 1")
        served = [chat(srv, [{"role": "user", "content": f"after {i}"}], {"X-Session-Id": "s"})[0] for i in range(4)]
        ck.check(served == ["0"] * 4, f"requests after the failure went to engines {served}")
        a.close()
        ck.check(srv.alive(), "the server went on")

    # A lone engine rides out a stray failure, and gives up after three in a row.
    env = {**os.environ, "NC_DEBUG_FAIL_ENGINE": "0:1"}
    srv = Server("--tokenizer", tok, "--devices", "cpu", model=MODEL, env=env)
    try:
        statuses = []
        for i in range(3):
            status, data, _ = srv.request("POST", "/v1/chat/completions",
                                          {"messages": [{"role": "user", "content": f"x{i}"}], "max_tokens": 4})
            statuses.append((status, json.loads(data)["error"]["message"] if status != 200 else ""))
        ck.check(all(s == 500 and "NC_DEBUG_FAIL_ENGINE" in msg for s, msg in statuses),
                 f"failed requests get a JSON 500: {statuses}")
        try:
            code = srv.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            code = None
        ck.check(code not in (None, 0) and "every engine has stopped" in srv.read_log(),
                 f"exit after the last engine stopped: {code}\n{srv.read_log()[-600:]}")
    finally:
        srv.kill()


def run(args, env=None, timeout=60):
    p = subprocess.run([NC_BIN, "serve", "--port", "0", *args], capture_output=True, text=True, timeout=timeout,
                       env=env)
    return p.returncode, p.stdout + p.stderr


def check_bad_devices(ck, tok):
    cases = [
        (["--devices", "gpu"], "'gpu' is not a device"),
        (["--devices", "cpu,cuda:0"], "mixed"),
        (["--devices", "cuda:0,cuda:0"], "GPU 0 is listed twice"),
        (["--devices", "cpu:0"], "cpu:THREADS"),
        (["--devices", ""], "needs a non-empty value"),
        (["--device", "cpu", "--devices", "cpu,cpu"], "not both"),
        (["--tensor-parallel", "2", "--devices", "cuda:0,cuda:1,cuda:2"], "3 GPUs do not split into groups"),
        (["--tensor-parallel", "2", "--devices", "cpu,cpu"], "needs GPUs"),
        (["--tensor-parallel", "2", "--device", "cpu"], "--tensor-parallel 2 needs --device cuda"),
    ]
    for args, says in cases:
        code, out = run(args)
        ck.check(code == 2 and says in out and out.count("\n") <= 2, f"{args}: exit {code}, {out!r}")
    if not shutil.which("nvidia-smi"):
        code, out = run(["--devices", "all"])
        ck.check(code == 2 and "sees none" in out, f"--devices all without GPUs: {code} {out!r}")
        # A GPU that is not there fails the start, naming it.
        code, out = run(["--tokenizer", tok, *MODEL, "--devices", "cuda:0,cuda:1"])
        ck.check(code == 1 and "engine 0 (cuda:0)" in out and "cuda:0" in out.split("engine 0 (cuda:0)")[1],
                 f"missing GPUs: exit {code}, {out[-400:]!r}")


def main():
    ck = Checker("test_server_devices")
    tmp = tempfile.mkdtemp(prefix="nc-devices-")
    try:
        tok = os.path.join(tmp, "tokenizer.pkl")
        make_big_tokenizer(tok)
        srv = Server("--tokenizer", tok, "--devices", "cpu,cpu", "--threads", "2", "--max-batch", "8", model=MODEL)
        try:
            check_listing(ck, srv)
            check_load_and_cancel(ck, srv)
            check_affinity(ck, srv)
            float_logprob = first_logprob(srv)[2]
            check_drain(ck, srv)
        finally:
            srv.kill()
        check_bundle_options(ck, tok, float_logprob)
        check_failed_engine(ck, tok)
        check_bad_devices(ck, tok)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
