#!/usr/bin/env python3
"""test_server_bad_input.py: `nanochat serve` against hostile or broken
clients (issue 5). Every bad request must get the right status and a JSON
error body (OpenAI's shape {"error": {"message", "type", "param", "code"}};
nanochat's endpoint also carries FastAPI's {"detail": ...}), and the server
must keep serving: malformed JSON, wrong types, out-of-range values,
nanochat's limits, invalid UTF-8, over-long prompts, huge bodies (declared
and chunked), unknown routes and methods, missing or wrong API keys,
requests the HTTP library would refuse with an HTML page or not answer
(issue 11: URI or headers too long, malformed lines and Content-Length,
unsupported versions and transfer codings, garbage, a malformed chunked
body), and slow (slowloris-style) clients, bounded by --idle-timeout.

The expected statuses and limits come from nanochat's chat_web.py and
OpenAI's API reference, not from our own output.
"""
import json
import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import Checker, Server, load_cases, read_until_close  # noqa: E402

KEY = "s3cret-key"
AUTH = {"Authorization": "Bearer " + KEY}
OK_MSG = [{"role": "user", "content": "hi"}]


def check_error(ck, status, body, want_status, what, param=None, nanochat=False):
    ck.check(status == want_status, f"{what}: status {status}, want {want_status} ({body[:200]!r})")
    try:
        j = json.loads(body)
    except ValueError:
        ck.check(False, f"{what}: body is not JSON: {body[:200]!r}")
        return
    err = j.get("error")
    ck.check(isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"]
             and err.get("type") in ("invalid_request_error", "server_error") and "param" in err and "code" in err,
             f"{what}: not OpenAI's error shape: {j}")
    if param is not None and isinstance(err, dict):
        ck.check(err.get("param") == param, f"{what}: param {err.get('param')!r}, want {param!r}")
    if nanochat:
        ck.check(isinstance(j.get("detail"), str), f"{what}: no FastAPI 'detail': {j}")


def raw(port, data, read=True, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    if read:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out and b"Content-Length" in out:
                    head, _, rest = out.partition(b"\r\n\r\n")
                    n = int(head.split(b"Content-Length:")[1].split(b"\r\n")[0])
                    if len(rest) >= n:
                        break
        except (socket.timeout, ConnectionResetError):
            pass
    s.close()
    return out


def answer(port, data, half_close=False, timeout=10):
    """Sends `data` (from a thread, so a large request can be answered while
    it is being sent) and reads the answer until the server closes:
    (status, lower-cased headers, body, seconds to the end of the answer)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send():
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t0 = time.time()
    sender = threading.Thread(target=send)
    sender.start()
    out = read_until_close(s)
    took = time.time() - t0
    sender.join()
    s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/1.1 ") else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers, body, took


def main():
    ck = Checker("test_server_bad_input")
    case = load_cases()["chat"][0]
    with Server("--api-key", KEY, "--idle-timeout", "2", "--max-connections", "64") as srv:
        post = lambda path, body, h=AUTH: srv.post(path, body, h)  # noqa: E731

        # Authentication: API routes need the key, /health does not.
        for path in ("/v1/chat/completions", "/chat/completions", "/v1/completions", "/tokenize"):
            status, body = srv.post(path, {"messages": OK_MSG, "prompt": "x"})
            check_error(ck, status, body, 401, f"{path} without key")
            status, body = srv.post(path, {"messages": OK_MSG, "prompt": "x"}, {"Authorization": "Bearer nope"})
            check_error(ck, status, body, 401, f"{path} with a wrong key")
        status, body = srv.get("/v1/models")
        check_error(ck, status, body, 401, "/v1/models without key")
        status, body = srv.post("/v1/chat/completions", {"messages": OK_MSG}, {"Authorization": KEY})
        check_error(ck, status, body, 401, "key without Bearer")
        ck.check(srv.get("/health")[0] == 200, "/health needs no key")
        status, body = post("/v1/chat/completions", {"messages": case["messages"], "temperature": 0, "max_tokens": 64})
        ck.check(status == 200 and json.loads(body)["choices"][0]["message"]["content"] == case["text"],
                 f"right key: {status} {body[:200]!r}")

        # Malformed JSON.
        for bad in ["{", "", "[]", "null", "\"x\"", "{\"messages\": [}", "{} trailing", "\x00\x01", "{'a': 1}"]:
            status, body = post("/v1/chat/completions", bad)
            check_error(ck, status, body, 400, f"malformed {bad!r}")
            status, body = post("/chat/completions", bad)
            check_error(ck, status, body, 400, f"nanochat malformed {bad!r}", nanochat=True)

        # Wrong types and out-of-range values (OpenAI's ranges).
        chat_cases = [
            ({"messages": "hi"}, "messages"),
            ({"messages": []}, "messages"),
            ({"messages": [{"role": "user"}]}, "messages[0].content"),
            ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
            ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
            ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
            ({"messages": OK_MSG, "temperature": "hot"}, "temperature"),
            ({"messages": OK_MSG, "temperature": 2.5}, "temperature"),
            ({"messages": OK_MSG, "temperature": -0.1}, "temperature"),
            ({"messages": OK_MSG, "top_p": 1.5}, "top_p"),
            ({"messages": OK_MSG, "top_k": "5"}, "top_k"),
            ({"messages": OK_MSG, "top_k": 1.5}, "top_k"),
            ({"messages": OK_MSG, "min_p": 2}, "min_p"),
            ({"messages": OK_MSG, "max_tokens": 0}, "max_tokens"),
            ({"messages": OK_MSG, "max_tokens": 10 ** 9}, "max_tokens"),
            ({"messages": OK_MSG, "max_completion_tokens": -3}, "max_completion_tokens"),
            ({"messages": OK_MSG, "n": 0}, "n"),
            ({"messages": OK_MSG, "n": 1000}, "n"),
            ({"messages": OK_MSG, "n": "2"}, "n"),
            ({"messages": OK_MSG, "seed": "abc"}, "seed"),
            ({"messages": OK_MSG, "stop": 5}, "stop"),
            ({"messages": OK_MSG, "stop": [""]}, "stop"),
            ({"messages": OK_MSG, "stop": ["a"] * 50}, "stop"),
            ({"messages": OK_MSG, "stream": "yes"}, "stream"),
            ({"messages": OK_MSG, "stream_options": 1}, "stream_options"),
            ({"messages": OK_MSG, "logprobs": 1}, "logprobs"),
            ({"messages": OK_MSG, "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
            ({"messages": OK_MSG, "top_logprobs": 2}, "top_logprobs"),
            ({"messages": OK_MSG, "presence_penalty": 3}, "presence_penalty"),
            ({"messages": OK_MSG, "model": 7}, "model"),
        ]
        for body, param in chat_cases:
            status, out = post("/v1/chat/completions", body)
            check_error(ck, status, out, 400, f"chat {body}", param=param)
        for body, param in [({}, "prompt"), ({"prompt": 3}, "prompt"), ({"prompt": [1, -2]}, "prompt"),
                            ({"prompt": ["a", "b"]}, "prompt"), ({"prompt": "x", "logprobs": 99}, "logprobs"),
                            ({"prompt": "x", "echo": "no"}, "echo"), ({"prompt": [70000]}, "prompt")]:
            status, out = post("/v1/completions", body)
            check_error(ck, status, out, 400, f"completion {body}", param=param)
        # Unknown fields are ignored; null means absent.
        status, out = post("/v1/chat/completions", {"messages": case["messages"], "temperature": 0, "max_tokens": 64,
                                                   "frobnicate": {"x": [1]}, "stop": None, "user": "u"})
        ck.check(status == 200 and json.loads(out)["choices"][0]["message"]["content"] == case["text"],
                 f"unknown fields: {status} {out[:200]!r}")

        # nanochat's limits (chat_web.py), 400 with FastAPI's detail.
        nano_cases = [
            {"messages": []},
            {"messages": [{"role": "user", "content": "x"}] * 501},
            {"messages": [{"role": "user", "content": ""}]},
            {"messages": [{"role": "user", "content": "x" * 8001}]},
            {"messages": [{"role": "user", "content": "x" * 8000}] * 5},
            {"messages": [{"role": "robot", "content": "x"}]},
            {"messages": OK_MSG, "temperature": 2.01},
            {"messages": OK_MSG, "temperature": -1},
            {"messages": OK_MSG, "top_k": 201},
            {"messages": OK_MSG, "top_k": -1},
            {"messages": OK_MSG, "max_tokens": 0},
            {"messages": OK_MSG, "max_tokens": 4097},
            {"messages": OK_MSG, "max_tokens": "10"},
        ]
        for body in nano_cases:
            status, out = post("/chat/completions", body)
            check_error(ck, status, out, 400, f"nanochat {str(body)[:80]}", nanochat=True)
        # 8000 characters are allowed (counted as characters, not bytes) up to the context.
        status, out = post("/chat/completions", {"messages": [{"role": "user", "content": "é" * 100}], "max_tokens": 2})
        ck.check(status == 200 and b'"done": true' in out, f"nanochat 100 x e-acute: {status} {out[:100]!r}")

        # Invalid UTF-8 inside a JSON string.
        bad_utf8 = b'{"messages": [{"role": "user", "content": "\xff\xfe abc"}]}'
        status, out = post("/v1/chat/completions", bad_utf8)
        check_error(ck, status, out, 400, "invalid UTF-8", param="messages[0].content")

        # Context overflow (256 tokens) names the limit.
        status, out = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "z" * 400}]})
        check_error(ck, status, out, 400, "context overflow")
        ck.check(b"256" in out, f"context limit not named: {out[:200]!r}")
        status, out = post("/chat/completions", {"messages": [{"role": "user", "content": "z" * 400}]})
        check_error(ck, status, out, 400, "nanochat context overflow", nanochat=True)

        # Huge bodies: declared (413 at once) and chunked (413 or a closed connection).
        # A declared 2 MiB body is refused from the headers alone, before the
        # client sends it (a client that sends anyway sees the 413 and a close).
        out = raw(srv.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                  KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (2 << 20))
        head, _, body = out.partition(b"\r\n\r\n")
        check_error(ck, int(head.split()[1]) if head else 0, body, 413, "2 MiB body")
        # A chunked body has no Content-Length: it is answered 413 once it passes
        # the limit (issue 11: a 20 MB one was cut off with an internal error).
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n\r\n")
        chunk = b"x" * 65536
        payload = head + b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(320)) + b"0\r\n\r\n"
        status, headers, body, took = answer(srv.port, payload)
        check_error(ck, status, body, 413, f"chunked 20 MiB ({took:.1f} s)")

        # Unknown routes and wrong methods.
        status, out = srv.get("/v2/nothing")
        check_error(ck, status, out, 404, "unknown route")
        status, out = post("/health", {})
        check_error(ck, status, out, 405, "POST /health")
        status, out = srv.get("/v1/chat/completions")
        check_error(ck, status, out, 405, "GET /v1/chat/completions")

        # Requests the HTTP library itself would refuse (with an HTML page, or
        # no answer until the client gives up) get the API's JSON error at once.
        get = b"GET /health HTTP/1.1\r\nHost: t\r\n"
        protocol_cases = [
            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "9000-byte URI"),
            (b"GET /health?" + b"&".join([b"a"] * 101) + b" HTTP/1.1\r\n\r\n", 414, "101 query parameters"),
            (get + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n", 431, "40 kB header"),
            (get + b"Cookie: " + b"; ".join(b"c%d=v" % i for i in range(301)) + b"\r\n\r\n", 431, "301 cookies"),
            (get + b"".join(b"X-F%d: v\r\n" % i for i in range(150)) + b"\r\n", 431, "150 header fields"),
            (get + b"Content-Length: 12abc\r\n\r\n", 400, "bad Content-Length"),
            (get + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, "two Content-Lengths"),
            (get + b"Content-Length: 99999999999999999999999\r\n\r\n", 413, "huge Content-Length"),
            (get + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400, "Transfer-Encoding and Content-Length"),
            (get + b"Transfer-Encoding: gzip\r\n\r\n", 501, "Transfer-Encoding: gzip"),
            (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505, "HTTP/2.0"),
            (b"GET / HTTP/0.9\r\nHost: t\r\n\r\n", 505, "HTTP/0.9"),
            (b"GET / HTTQ/1.1\r\n\r\n", 400, "not HTTP"),
            (get + b"No colon here\r\n\r\n", 400, "header line without a colon"),
            (get + b"X-Nul: a\x00b\r\n\r\n", 400, "NUL in a header value"),
            (get + b" folded: line\r\n\r\n", 400, "folded header line"),
            (b"GARBAGE\r\n\r\n", 400, "request line without a target"),
            (b"\x00\x01\x02\x03\x04", 400, "binary garbage, no line end"),
            (b"GET /hea", 400, "a head cut off by the client"),
            (b"POST /tokenize HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + KEY.encode() +
             b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
             400, "malformed chunked body"),
        ]
        # The largest head allowed still reaches the handlers: the library
        # holds it (else it would answer its own HTML 431).
        big = (b"GET /health?" + b"&".join(b"q%d" % i for i in range(100)) + b" HTTP/1.1\r\nHost: t\r\n" +
               b"Cookie: " + b"; ".join(b"c%d=v" % i for i in range(300)) + b"\r\n" +
               b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 290) for i in range(98)) + b"\r\n")
        status, headers, body, took = answer(srv.port, big)
        ck.check(30000 < len(big) <= 32768 and status == 200 and json.loads(body)["status"] == "ok",
                 f"a {len(big)}-byte head at the limits: {status} {body[:100]!r}")
        for data, want, what in protocol_cases:
            status, headers, body, took = answer(srv.port, data, half_close=what.startswith("a head cut"))
            check_error(ck, status, body, want, what)
            ck.check(took < 1.5 and headers.get("content-type") == "application/json" and
                     re.fullmatch(r"req_[0-9a-f]{16}", headers.get("x-request-id", "")) is not None,
                     f"{what}: answered in {took:.1f} s with headers {headers}")

        # Slow clients: 20 connections trickling a header byte at a time do not
        # stop others being served, and silent ones are closed after the idle
        # timeout (2 s here).
        slow = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            slow.append(s)
        t0 = time.time()
        for _ in range(3):
            for s in slow:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass
            status, out = post("/v1/chat/completions", {"messages": case["messages"], "temperature": 0,
                                                       "max_tokens": 64})
            ck.check(status == 200 and json.loads(out)["choices"][0]["message"]["content"] == case["text"],
                     f"served beside slow clients: {status}")
            time.sleep(0.3)
        # Each is answered 408 (JSON) once silent for the idle timeout, then closed.
        answered = 0
        for s in slow:
            got = read_until_close(s, max(0.5, 6 - (time.time() - t0)))
            s.close()
            head, _, body = got.partition(b"\r\n\r\n")
            answered += head.startswith(b"HTTP/1.1 408") and body.startswith(b'{"error"') and b"request_timeout" in body
        ck.check(answered == len(slow), f"{answered}/{len(slow)} silent slow connections answered 408 after the idle timeout")
        # A client that sends a body slower than the idle timeout is dropped too.
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + KEY.encode() +
                  b"\r\nContent-Length: 100\r\n\r\n{\"mess")
        s.settimeout(8)
        try:
            got = s.recv(100)
        except socket.timeout:
            got = b"timeout"
        ck.check(got in (b"",) or got.startswith(b"HTTP/1.1 4"), f"stalled body not dropped: {got!r}")
        s.close()

        # Still alive and still right.
        status, out = post("/v1/chat/completions", {"messages": case["messages"], "temperature": 0, "max_tokens": 64})
        ck.check(status == 200 and json.loads(out)["choices"][0]["message"]["content"] == case["text"], "final answer")
        m = srv.metrics()
        ck.check(m.get('nanochat_requests_total{endpoint="/v1/chat/completions",status="401"}', 0) >= 2,
                 "401s counted in /metrics")
        ck.check(srv.alive(), "server alive")
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
