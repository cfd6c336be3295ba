#!/usr/bin/env python3
"""test_server_concurrency.py: many clients at once (issue 5).

  - 32 simultaneous greedy streams of different prompts and lengths, half on
    the OpenAI API and half on nanochat's protocol: each must equal the same
    request run alone, and both must equal PyTorch's greedy continuation
    (tests/data/server/cases.json); the server must really have batched them.
  - Clients that disconnect mid-stream (and some while still queued) leak no
    KV-cache blocks: /metrics returns to zero blocks in use, and the server
    still answers correctly afterwards.
"""
import http.client
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import Checker, Server, load_cases, sse_events  # noqa: E402

N_STREAMS = 32
LENGTHS = [1, 3, 8, 13, 21, 34, 55, 64]


def expected(case, max_tokens):
    """Text and finish reason of the reference cut at max_tokens (this
    model's ordinary tokens are single bytes; ids >= 256 are specials)."""
    ids = case["greedy_ids"]
    stopped = case["stopped"] and len(ids) <= max_tokens
    kept = ids[:-1] if stopped else ids[:max_tokens]
    text = bytes(t for t in kept if t < 256).decode("utf-8", errors="replace")
    return text, "stop" if stopped else "length"


def stream_request(port, job):
    """Runs one streaming request; returns (text, finish)."""
    case, max_tokens, proto = job
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    if proto == "openai":
        body = {"messages": case["messages"], "temperature": 0, "max_tokens": max_tokens, "stream": True}
        c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    else:
        body = {"messages": case["messages"], "temperature": 0, "top_k": 0, "max_tokens": max_tokens}
        c.request("POST", "/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        return f"HTTP {r.status}: {r.read()[:200]!r}", None
    text, finish = "", None
    for ev in sse_events(r):
        if ev == "[DONE]":
            break
        if proto == "openai":
            for ch in ev["choices"]:
                text += ch["delta"].get("content") or ""
                finish = ch["finish_reason"] or finish
        else:
            text += ev.get("token", "")
            if ev.get("done"):
                finish = "done"
    c.close()
    return text, finish


def run_concurrently(port, jobs):
    results = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def worker(i):
        barrier.wait()
        try:
            results[i] = stream_request(port, jobs[i])
        except Exception as e:  # reported as a mismatch below
            results[i] = (f"exception {e!r}", None)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def open_stream(port, messages, max_tokens):
    """Starts a streaming request on a raw socket and returns the socket."""
    body = json.dumps({"messages": messages, "temperature": 0, "max_tokens": max_tokens}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return s


def main():
    cases = load_cases()["chat"]
    ck = Checker("test_server_concurrency")
    jobs = [(cases[i % len(cases)], LENGTHS[(i * 3) % len(LENGTHS)], "openai" if i % 2 else "nanochat")
            for i in range(N_STREAMS)]
    with Server("--max-batch", "32") as srv:
        alone = [stream_request(srv.port, job) for job in jobs]
        before = srv.metrics()
        together = run_concurrently(srv.port, jobs)
        after = srv.metrics()
        for i, (job, a, t) in enumerate(zip(jobs, alone, together)):
            want_text, want_finish = expected(job[0], job[1])
            if job[2] == "nanochat":
                want_finish = "done"
            ck.check(a == (want_text, want_finish), f"stream {i} alone: {a!r} != reference {want_text!r}/{want_finish}")
            ck.check(t == a, f"stream {i} concurrent {t!r} != alone {a!r}")
        # It batched: some engine steps ran several rows.
        steps = after["nanochat_batch_rows_count"] - before["nanochat_batch_rows_count"]
        single = after['nanochat_batch_rows_bucket{le="1"}'] - before['nanochat_batch_rows_bucket{le="1"}']
        ck.check(steps > single, f"no step had more than one row ({steps} steps)")
        # Nothing lost or duplicated: exactly 32 more 200s on the two endpoints.
        key_oa = 'nanochat_requests_total{endpoint="/v1/chat/completions",status="200"}'
        key_nc = 'nanochat_requests_total{endpoint="/chat/completions",status="200"}'
        served = (after.get(key_oa, 0) - before.get(key_oa, 0)) + (after.get(key_nc, 0) - before.get(key_nc, 0))
        ck.check(served == N_STREAMS, f"{served} requests served, expected {N_STREAMS}")

        # Disconnects: 24 clients leave after their first event, 8 right after
        # sending (many of those are still queued or prefilling).
        before = srv.metrics()
        socks = [open_stream(srv.port, cases[i % len(cases)]["messages"], 240) for i in range(24)]
        for s in socks:
            s.recv(1024)  # response headers + first event
        early = [open_stream(srv.port, cases[i]["messages"], 240) for i in range(8)]
        for s in socks + early:
            s.close()
        deadline = time.time() + 20
        m = srv.metrics()
        while time.time() < deadline:
            m = srv.metrics()
            if m["nanochat_kv_blocks_used"] == 0 and m["nanochat_running_requests"] == 0 \
                    and m["nanochat_queue_depth"] == 0:
                break
            time.sleep(0.05)
        ck.check(m["nanochat_kv_blocks_used"] == 0, f"{m['nanochat_kv_blocks_used']} KV blocks still in use")
        ck.check(m["nanochat_running_requests"] == 0 and m["nanochat_queue_depth"] == 0,
                 f"requests left: running {m['nanochat_running_requests']}, queued {m['nanochat_queue_depth']}")
        cancelled = m['nanochat_rows_finished_total{reason="cancelled"}'] - \
            before['nanochat_rows_finished_total{reason="cancelled"}']
        ck.check(cancelled >= 1, f"no row was cancelled ({cancelled})")
        ck.check(m["nanochat_kv_blocks_used"] <= m["nanochat_kv_blocks_total"], "blocks used <= total")
        # The engine's time: it has run steps, and its forward passes are part of them.
        ck.check(0 < m["nanochat_engine_forward_seconds_total"] <= m["nanochat_engine_step_seconds_total"],
                 f"engine seconds: forward {m['nanochat_engine_forward_seconds_total']}, "
                 f"step {m['nanochat_engine_step_seconds_total']}")
        # Still serving, still right.
        job = (cases[3], 64, "openai")
        ck.check(stream_request(srv.port, job) == expected(cases[3], 64), "answer after the disconnects")
        ck.check(srv.alive(), "server alive")

    # A client that stops reading is cancelled once --max-lag tokens wait for
    # it, instead of holding the engine; it finds an error at the end.
    with Server("--max-lag", "16") as srv:
        body = json.dumps({"messages": cases[0]["messages"], "temperature": 0, "max_tokens": 250, "stream": True,
                           "logprobs": True, "top_logprobs": 20}).encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # so the server's writes block soon
        s.connect(("127.0.0.1", srv.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.time() + 20
        while time.time() < deadline:
            m = srv.metrics()
            if m['nanochat_rows_finished_total{reason="cancelled"}'] >= 1 and m["nanochat_kv_blocks_used"] == 0:
                break
            time.sleep(0.05)
        ck.check(m['nanochat_rows_finished_total{reason="cancelled"}'] >= 1 and m["nanochat_kv_blocks_used"] == 0,
                 "a client that stopped reading was not cancelled")
        data = b""
        s.settimeout(10)
        try:
            while b"[DONE]" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
        s.close()
        ck.check(b"too slowly" in data and data.rstrip().endswith(b"0"), f"lagging client's stream end: {data[-200:]!r}")
        ck.check(srv.alive(), "server alive after a lagging client")
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
