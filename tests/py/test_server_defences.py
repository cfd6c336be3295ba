#!/usr/bin/env python3
"""test_server_defences.py: what a public `nanochat serve` needs besides the
API itself (issue 11), each against a real server on the CPU:

  1. The request log, as JSON Lines (--log-format json): one line per
     request with its id (also the X-Request-Id header: the client's when
     valid), client, method, route, status, model, prompt / cached /
     completion tokens (equal to the response's usage), time to first token,
     total time, finish reason (equal to the response's) and whether the
     client disconnected; every line JSON; never the message text;
     libmicrohttpd's messages only at --log-level debug.
  2. The text form, and the levels: debug adds the library's messages,
     warn keeps only 5xx requests.
  3. POST routes take only application/json (415 otherwise, before any
     generation): a cross-site form cannot spend the server's compute.
  4. CORS: the preflight allows the headers asked for (the OpenAI
     JavaScript library's X-Stainless-*); --cors-origins restricts origins.
  5. Slow trickle: with --max-connections 20, 20 connections from one
     address trickling a byte a second no longer lock everyone out: the
     per-address cap leaves room for other addresses, and each request not
     complete within --read-timeout of its first byte is answered 408.
  6. The per-address and total caps, exactly (429, 503).

Other client addresses are 127.0.0.2 (all of 127/8 is loopback on Linux).
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import (DATA, JSON, NC_BIN, Checker, Server, free_port, make_big_tokenizer,  # noqa: E402
                         read_until_close, sse_events)

MARKER = "zebra-marker-4711"  # message text that must never reach the log
CHAT = {"messages": [{"role": "user", "content": "say " + MARKER}], "temperature": 0, "max_tokens": 5}
OTHER = "127.0.0.2"


def request(port, method, path, body=None, headers=None, source=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                   source_address=(source, 0) if source else None)
    if isinstance(body, dict):
        body = json.dumps(body)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data, r


def log_lines(srv, want, timeout=5):
    """The server's log lines once `want(lines)` holds (or after timeout)."""
    deadline = time.time() + timeout
    while True:
        lines = [x for x in srv.read_log().splitlines() if x.strip()]
        if want(lines) or time.time() > deadline:
            return lines


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def hold(port, n):
    """`n` connections from 127.0.0.1, each with half a request head."""
    time.sleep(0.2)  # the readiness check's connection may still be closing (it holds a slot until then)
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /health HTTP/1.1\r\n")
        held.append(s)
    time.sleep(0.2)
    return held


def json_log(ck, tok):
    with Server("--tokenizer", tok, "--log-format", "json", model=("--random", "4,512,4")) as srv:
        model = json.loads(srv.get("/v1/models")[1])["data"][0]["id"]
        ids = {}
        # A whole response, with the client's own request id.
        status, body, r = request(srv.port, "POST", "/v1/chat/completions", CHAT, {**JSON, "X-Request-Id": "trace-abc.123"})
        ck.check(status == 200 and r.getheader("X-Request-Id") == "trace-abc.123", f"client id echoed: {status}")
        ids["whole"] = ("trace-abc.123", json.loads(body))
        # A stream with usage; the id is ours.
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        c.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": True, "max_tokens": 7,
                                                              "stream_options": {"include_usage": True}}), JSON)
        r = c.getresponse()
        events = list(sse_events(r))
        rid = r.getheader("X-Request-Id") or ""
        ck.check(re.fullmatch(r"req_[0-9a-f]{16}", rid) is not None, f"generated id {rid!r}")
        ids["stream"] = (rid, events)
        # Invalid client ids are replaced.
        for bad in ("has space", "x" * 200, "quote\"d"):
            _, _, r = request(srv.port, "GET", "/health", headers={"X-Request-Id": bad})
            ck.check(re.fullmatch(r"req_[0-9a-f]{16}", r.getheader("X-Request-Id") or "") is not None,
                     f"invalid id {bad[:20]!r} -> {r.getheader('X-Request-Id')!r}")
        # Errors.
        status, _, r = request(srv.port, "GET", "/v1/nothing")
        ids["404"] = (r.getheader("X-Request-Id"), None)
        status, body, r = request(srv.port, "POST", "/v1/chat/completions", json.dumps(CHAT), {"Content-Type": "text/plain"})
        ids["415"] = (r.getheader("X-Request-Id"), None)
        s = socket.create_connection(("127.0.0.1", srv.port))
        got = s.sendall(b"\x00\x01\x02garbage") or read_until_close(s, 5)
        s.close()
        m = re.search(rb"X-Request-Id: (\S+)", got)
        ids["garbage"] = (m.group(1).decode() if m else "?", None)
        # A client that leaves mid-stream.
        s = socket.create_connection(("127.0.0.1", srv.port))
        body = json.dumps({"messages": [{"role": "user", "content": MARKER}], "max_tokens": 1500, "temperature": 0,
                           "stream": True}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"X-Request-Id: leaver-1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        s.settimeout(30)
        seen = b""
        while seen.count(b"data: ") < 4:
            seen += s.recv(4096)
        s.close()
        ids["left"] = ("leaver-1", None)

        lines = log_lines(srv, lambda ls: any('"leaver-1"' in x for x in ls), timeout=10)
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:
                ck.check(False, f"log line is not JSON: {line[:200]!r}")
        reqs = {p.get("request_id"): p for p in parsed if p.get("type") == "request"}
        keys = {"time", "level", "type", "request_id", "client", "method", "route", "status", "model", "prompt_tokens",
                "cached_tokens", "completion_tokens", "ttft_ms", "total_ms", "finish_reason", "disconnected"}
        odd = [rec for rec in reqs.values() if set(rec) != keys or rec["client"] != "127.0.0.1"]
        ck.check(reqs and not odd, f"request lines without the fields: {odd[:3]}")
        whole = reqs.get(ids["whole"][0], {})
        usage, choice = ids["whole"][1]["usage"], ids["whole"][1]["choices"][0]
        ck.check(whole.get("method") == "POST" and whole.get("route") == "/v1/chat/completions" and
                 whole.get("status") == 200 and whole.get("model") == model and
                 whole.get("prompt_tokens") == usage["prompt_tokens"] and
                 whole.get("completion_tokens") == usage["completion_tokens"] and
                 whole.get("cached_tokens") == usage["prompt_tokens_details"]["cached_tokens"] and
                 whole.get("finish_reason") == choice["finish_reason"] and whole.get("disconnected") is False and
                 0 <= whole.get("ttft_ms", -1) <= whole.get("total_ms", -1), f"whole response line: {whole} vs {usage}")
        stream = reqs.get(ids["stream"][0], {})
        su = [e for e in ids["stream"][1] if isinstance(e, dict) and e.get("usage")]
        finish = [c["finish_reason"] for e in ids["stream"][1] if isinstance(e, dict) for c in e.get("choices", [])
                  if c.get("finish_reason")]
        ck.check(su and stream.get("completion_tokens") == su[0]["usage"]["completion_tokens"] == 7 and
                 stream.get("prompt_tokens") == su[0]["usage"]["prompt_tokens"] and
                 [stream.get("finish_reason")] == finish and stream.get("status") == 200, f"stream line: {stream}")
        nf = reqs.get(ids["404"][0], {})
        ck.check(nf.get("status") == 404 and nf.get("route") == "/v1/nothing" and nf.get("model") is None and
                 nf.get("prompt_tokens") is None, f"404 line: {nf}")
        ck.check(reqs.get(ids["415"][0], {}).get("status") == 415, f"415 line: {reqs.get(ids['415'][0])}")
        g = reqs.get(ids["garbage"][0], {})
        ck.check(g.get("status") == 400 and g.get("method") is None, f"garbage line: {g}")
        left = reqs.get("leaver-1", {})
        ck.check(left.get("disconnected") is True and left.get("finish_reason") == "cancelled" and
                 left.get("status") == 200 and left.get("completion_tokens", 0) >= 3, f"disconnect line: {left}")
        log = srv.read_log()
        ck.check(MARKER not in log and "say " not in log, "message text in the log")
        ck.check("libmicrohttpd" not in log and "Connection was closed" not in log, "library messages at info level")
        ck.check(any(p.get("msg", "").startswith("listening on http://") for p in parsed), "server messages as JSON")


def text_log_and_levels(ck):
    with Server("--log-level", "debug") as srv:
        srv.get("/health")
        # A body that never completes: the library says so (debug only).
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /tokenize HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
        time.sleep(0.3)
        s.close()
        lines = log_lines(srv, lambda ls: any("debug: libmicrohttpd:" in x for x in ls) and
                          any('"POST /tokenize"' in x for x in ls))
        pat = r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO req_[0-9a-f]{16} 127\.0\.0\.1 "GET /health" 200 \d+\.\dms'
        ck.check(any(re.fullmatch(pat, x) for x in lines), f"text request line: {lines}")
        ck.check(any(x.startswith("nanochat serve: debug: libmicrohttpd: ") for x in lines),
                 f"debug level shows the library's messages: {lines}")
        ck.check(any('"POST /tokenize" 499' in x and x.endswith(" disconnected") for x in lines),
                 f"a request abandoned mid-body: {lines}")
    with Server("--log-level", "warn", port=free_port()) as srv:
        srv.get("/health")
        srv.get("/nope")
        s = socket.create_connection(("127.0.0.1", srv.port))
        got = s.sendall(b"GET / HTTP/2.0\r\n\r\n") or read_until_close(s, 5)
        s.close()
        ck.check(got.startswith(b"HTTP/1.1 505") and error_code(got.partition(b"\r\n\r\n")[2]) ==
                 "http_version_not_supported", f"HTTP/2.0: {got[:120]!r}")
        lines = log_lines(srv, lambda ls: any(" 505 " in x for x in ls))
        requests = [x for x in lines if " req_" in x]
        ck.check(len(requests) == 1 and " WARN " in requests[0] and '"GET /"' in requests[0],
                 f"warn level keeps only the 5xx line: {lines}")
    for args, what in [(["--log-format", "xml"], "--log-format"), (["--log-level", "loud"], "--log-level"),
                       (["--cors-origins", "ftp://x"], "--cors-origins"), (["--cors-origins", ""], "--cors-origins"),
                       (["--read-timeout", "0"], "--read-timeout"), (["--max-connections-per-ip", "0"],
                                                                        "--max-connections-per-ip")]:
        p = subprocess.run([NC_BIN, "serve", "-m", DATA, *args], capture_output=True, text=True, timeout=30)
        lines = [x for x in (p.stdout + p.stderr).splitlines() if x.strip()]
        ck.check(p.returncode == 2 and len(lines) == 1 and what in lines[0], f"{args}: {p.returncode} {lines}")


def content_type(ck):
    with Server() as srv:
        before = srv.metrics()["nanochat_prompt_tokens_total"]
        body = json.dumps(CHAT)
        for path in ("/v1/chat/completions", "/chat/completions", "/v1/completions", "/tokenize"):
            for ct in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                       "application/json; charset=latin-1", "application/jsonx"):
                status, out, _ = request(srv.port, "POST", path, body, {"Content-Type": ct} if ct else {})
                ck.check(status == 415 and error_code(out) == "unsupported_media_type", f"{path} {ct}: {status} {out[:100]!r}")
        ck.check(srv.metrics()["nanochat_prompt_tokens_total"] == before, "a 415 request reached the engine")
        for ct in ("application/json", "application/json; charset=utf-8", "Application/JSON;charset=\"UTF-8\""):
            status, out, _ = request(srv.port, "POST", "/v1/chat/completions", body, {"Content-Type": ct})
            ck.check(status == 200, f"{ct}: {status} {out[:100]!r}")
        # GET routes take no body: no Content-Type needed.
        ck.check(request(srv.port, "GET", "/v1/models")[0] == 200, "GET /v1/models")


def cors(ck):
    asked = ("authorization, content-type, x-stainless-os, x-stainless-lang, x-stainless-arch, "
             "x-stainless-runtime, x-stainless-package-version, x-stainless-retry-count")
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": asked}
    with Server() as srv:
        status, _, r = request(srv.port, "OPTIONS", "/v1/chat/completions", headers=pre)
        allowed = {h.strip().lower() for h in (r.getheader("Access-Control-Allow-Headers") or "").split(",")}
        ck.check(status == 204 and r.getheader("Access-Control-Allow-Origin") == "*" and
                 "POST" in (r.getheader("Access-Control-Allow-Methods") or "") and
                 {h.strip() for h in asked.split(",")} <= allowed, f"preflight: {status} {r.getheaders()}")
        status, _, r = request(srv.port, "OPTIONS", "/v1/chat/completions",
                               headers={**pre, "Access-Control-Request-Headers": "bad header, x"})
        ck.check(status == 204 and "content-type" in (r.getheader("Access-Control-Allow-Headers") or "").lower(),
                 f"malformed request headers: the default list: {r.getheaders()}")
        _, _, r = request(srv.port, "GET", "/health", headers={"Origin": "https://anywhere.example"})
        ck.check(r.getheader("Access-Control-Allow-Origin") == "*" and
                 "X-Request-Id" in (r.getheader("Access-Control-Expose-Headers") or ""), f"default CORS: {r.getheaders()}")
    with Server("--cors-origins", "https://app.example, http://localhost:3000") as srv:
        status, _, r = request(srv.port, "OPTIONS", "/v1/chat/completions", headers=pre)
        ck.check(status == 204 and r.getheader("Access-Control-Allow-Origin") == "https://app.example" and
                 "Origin" in (r.getheader("Vary") or ""), f"listed origin preflight: {status} {r.getheaders()}")
        status, out, r = request(srv.port, "OPTIONS", "/v1/chat/completions", headers={**pre, "Origin": "https://evil.example"})
        ck.check(status == 403 and error_code(out) == "origin_not_allowed" and
                 r.getheader("Access-Control-Allow-Origin") is None, f"unlisted origin preflight: {status} {out[:100]!r}")
        _, _, r = request(srv.port, "GET", "/v1/models", headers={"Origin": "https://evil.example"})
        ck.check(r.getheader("Access-Control-Allow-Origin") is None, "unlisted origin gets no Allow-Origin")
        _, _, r = request(srv.port, "GET", "/v1/models", headers={"Origin": "http://localhost:3000"})
        ck.check(r.getheader("Access-Control-Allow-Origin") == "http://localhost:3000", "listed origin")


def trickle(ck):
    """The issue's attack: 20 connections from one address each trickling a
    header byte (here every second, well inside the idle timeout)."""
    with Server("--max-connections", "20", "--idle-timeout", "8", "--read-timeout", "3") as srv:
        time.sleep(0.2)  # the readiness check's connection may still be closing
        socks, refused = [], 0
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: a")
            socks.append([s, time.time(), b""])
        time.sleep(0.3)
        for entry in socks:
            entry[0].setblocking(False)
            try:
                entry[2] += entry[0].recv(4096)
            except BlockingIOError:
                pass
        refused = sum(e[2].startswith(b"HTTP/1.1 429") and b"too_many_connections" in e[2] for e in socks)
        ck.check(refused == 10, f"{refused}/20 refused by the per-address cap (10: half of --max-connections)")
        # Another address is served at once while they trickle.
        t0 = time.time()
        try:
            status, body, _ = request(srv.port, "GET", "/health", source=OTHER, timeout=3)
        except OSError as e:
            status, body = repr(e), b""
        ck.check(status == 200 and time.time() - t0 < 1, f"/health from {OTHER} during the trickle: {status}")
        # Every admitted trickler is answered 408 within the read timeout.
        answered = {}
        while time.time() - t0 < 8 and len(answered) < 20:
            for i, (s, t_first, got) in enumerate(socks):
                if i in answered:
                    continue
                try:
                    s.send(b"a")
                except OSError:
                    pass
                try:
                    chunk = s.recv(4096)
                    socks[i][2] += chunk
                    if not chunk or b"\r\n\r\n" in socks[i][2]:
                        answered[i] = (time.time() - t_first, socks[i][2])
                except (BlockingIOError, ConnectionResetError):
                    if socks[i][2]:
                        answered[i] = (time.time() - t_first, socks[i][2])
            time.sleep(1.0 if len(answered) < 20 else 0)
        late = [(round(t, 1), g[:40]) for t, g in answered.values()
                if not (g.startswith(b"HTTP/1.1 429") or (g.startswith(b"HTTP/1.1 408") and b"request_timeout" in g
                                                          and t < 3 + 1.5))]
        ck.check(len(answered) == 20 and not late, f"trickling connections: {len(answered)} answered, late/wrong: {late}")
        for s, _, _ in socks:
            s.close()
        time.sleep(0.3)
        t0 = time.time()
        status, _, _ = request(srv.port, "GET", "/health", timeout=3)
        ck.check(status == 200 and time.time() - t0 < 1, "/health from the trickling address afterwards")


def caps(ck):
    with Server("--max-connections-per-ip", "3") as srv:
        held = hold(srv.port, 3)
        s = socket.create_connection(("127.0.0.1", srv.port))
        t0 = time.time()
        got = read_until_close(s, 5)
        s.close()
        head, _, body = got.partition(b"\r\n\r\n")
        ck.check(head.startswith(b"HTTP/1.1 429") and b"Retry-After: 1" in head and error_code(body) ==
                 "too_many_connections" and time.time() - t0 < 1, f"4th connection: {got[:200]!r}")
        ck.check(request(srv.port, "GET", "/health", source=OTHER)[0] == 200, "another address")
        held.pop().close()
        time.sleep(0.2)
        ck.check(request(srv.port, "GET", "/health")[0] == 200, "a freed slot")
        for s in held:
            s.close()
    with Server("--max-connections", "4", "--max-connections-per-ip", "4") as srv:
        held = hold(srv.port, 4)
        s = socket.create_connection(("127.0.0.1", srv.port), source_address=(OTHER, 0))
        got = read_until_close(s, 5)
        s.close()
        ck.check(got.startswith(b"HTTP/1.1 503") and error_code(got.partition(b"\r\n\r\n")[2]) == "server_busy",
                 f"over --max-connections: {got[:120]!r}")
        for s in held:
            s.close()


def main():
    ck = Checker("test_server_defences")
    tmp = tempfile.mkdtemp(prefix="nc-defences-")
    try:
        tok = os.path.join(tmp, "tokenizer.pkl")
        make_big_tokenizer(tok)
        parts = [("request log", lambda: json_log(ck, tok)), ("log levels", lambda: text_log_and_levels(ck)),
                 ("content type", lambda: content_type(ck)), ("cors", lambda: cors(ck)),
                 ("trickle", lambda: trickle(ck)), ("caps", lambda: caps(ck))]
        for name, part in parts:
            try:
                part()
            except Exception as e:  # one part failing must not hide the others
                ck.check(False, f"{name}: {type(e).__name__}: {str(e)[:300]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
