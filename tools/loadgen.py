#!/usr/bin/env python3
"""loadgen.py: load generator for `nanochat serve` (issue 5's benchmark).

N concurrent clients each stream completions from the server over plain
HTTP/1.1 on asyncio sockets (no third-party packages), and the tool reports
aggregate output tokens/s, time to first token (TTFT) and inter-token
latency (ITL) percentiles:

    python3 tools/loadgen.py --url http://127.0.0.1:8000 --clients 64 \
        --prompt-tokens 512 --max-tokens 256

Each request is POST /v1/completions with a prompt of exactly
--prompt-tokens token ids (so the prompt length does not depend on the
tokenizer; ids are drawn from the vocabulary's ordinary range with a fixed
seed, different per client so the prefix cache cannot serve them), stream
true and stream_options.include_usage, so the generated token count comes
from the server's usage. With --endpoint nanochat the clients use
nanochat's POST /chat/completions instead (a chat of about the same length).

The GPU benchmark of issue 5 (d34-shaped random weights; a random model
uses the bundled picochat tokenizer, and ids it lacks stream as U+FFFD, one
chunk per token):

    build/nanochat serve --random d34 --device cuda --max-batch 64 --port 8000 &
    python3 tools/loadgen.py --clients 64 --prompt-tokens 512 --max-tokens 256 --warmup
    python3 tools/loadgen.py --clients 1 --prompt-tokens 512 --max-tokens 256 --warmup
    # the last line's "decode per client" vs `nanochat bench`'s batch-1 decode

Definitions: TTFT = request sent -> first non-empty text chunk. ITL = gap
between consecutive text chunks of one stream (the server sends one chunk
per token unless the client falls behind, so this is the per-token latency
a reader sees). Throughput = all generated tokens / wall time from the first
request sent to the last stream finished. Decode speed per client =
(tokens - 1) / (last chunk - first chunk).
"""
import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from urllib.parse import urlparse


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Result:
    def __init__(self):
        self.t_send = self.t_first = self.t_last = None
        self.chunk_times = []
        self.tokens = 0
        self.error = None


async def read_response_head(reader):
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def body_chunks(reader, headers):
    """Yields the body's bytes as they arrive (chunked or not)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


async def one_request(host, port, path, payload, api_key, nanochat, res):
    body = json.dumps(payload).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if api_key:
        head += f"Authorization: Bearer {api_key}\r\n"
    reader, writer = await asyncio.open_connection(host, port)
    try:
        res.t_send = time.perf_counter()
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        status, headers = await read_response_head(reader)
        buf = b""
        async for data in body_chunks(reader, headers):
            if status != 200:
                buf += data
                continue
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if not event.startswith(b"data: "):
                    continue
                payload_s = event[6:]
                if payload_s == b"[DONE]":
                    continue
                ev = json.loads(payload_s)
                now = time.perf_counter()
                if nanochat:
                    text = ev.get("token", "")
                    if ev.get("error"):
                        res.error = ev["error"]
                else:
                    if ev.get("error"):
                        res.error = ev["error"].get("message", "error")
                    if ev.get("usage"):
                        res.tokens = ev["usage"]["completion_tokens"]
                    text = "".join(c.get("text", "") for c in ev.get("choices", []))
                if text:
                    if res.t_first is None:
                        res.t_first = now
                    res.chunk_times.append(now)
                    res.t_last = now
                    if nanochat:
                        res.tokens += 1
        if status != 200:
            res.error = f"HTTP {status}: {buf[:200].decode(errors='replace')}"
    finally:
        writer.close()


def make_payload(args, rng, vocab_hi):
    if args.endpoint == "nanochat":
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma"])
                         for _ in range(args.prompt_tokens - 8))
        return "/chat/completions", {"messages": [{"role": "user", "content": words}],
                                     "max_tokens": args.max_tokens, "temperature": args.temperature,
                                     "top_k": 50}
    lo = 256 if vocab_hi > 1024 else 0  # skip the byte tokens when the vocabulary has merges
    ids = [rng.randrange(lo, vocab_hi) for _ in range(args.prompt_tokens)]
    return "/v1/completions", {"prompt": ids, "max_tokens": args.max_tokens, "temperature": args.temperature,
                               "stream": True, "stream_options": {"include_usage": True}}


async def model_info(host, port, api_key):
    """GET /v1/models: (vocab_size, max_model_len) of the served model, or defaults."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
        head = f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        if api_key:
            head += f"Authorization: Bearer {api_key}\r\n"
        writer.write(head.encode() + b"\r\n")
        status, headers = await read_response_head(reader)
        data = b"".join([c async for c in body_chunks(reader, headers)])
        writer.close()
        m = json.loads(data)["data"][0]
        return int(m.get("vocab_size", 30000)), int(m.get("max_model_len", 0))
    except (OSError, ValueError, KeyError, IndexError):
        return 30000, 0


async def main_async(args):
    u = urlparse(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    vocab, ctx = await model_info(host, port, args.api_key)
    vocab_hi = args.vocab or vocab - 9  # stay below the special tokens (the last 9 ids)
    if ctx and args.prompt_tokens + args.max_tokens > ctx:
        print(f"loadgen: warning: prompt + max_tokens = {args.prompt_tokens + args.max_tokens} exceeds the "
              f"server's context of {ctx}; generations will stop early", file=sys.stderr)
    results = []

    async def client(i):
        rng = random.Random(args.seed * 100003 + i)
        for r in range(args.requests):
            res = Result()
            path, payload = make_payload(args, rng, vocab_hi)
            try:
                await one_request(host, port, path, payload, args.api_key, args.endpoint == "nanochat", res)
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                res.error = repr(e)
            results.append(res)

    if args.warmup:
        warm = argparse.Namespace(**vars(args))
        warm.max_tokens = 8
        rng = random.Random(0)
        path, payload = make_payload(warm, rng, vocab_hi)
        await one_request(host, port, path, payload, args.api_key, args.endpoint == "nanochat", Result())
    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(args.clients)))
    wall = time.perf_counter() - t0
    return results, wall


def report(args, results, wall):
    ok = [r for r in results if r.error is None and r.t_first is not None]
    errors = [r.error for r in results if r.error is not None]
    tokens = sum(r.tokens for r in ok)
    ttft = [r.t_first - r.t_send for r in ok]
    itl = [b - a for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:])]
    decode = [(r.tokens - 1) / (r.t_last - r.t_first) for r in ok if r.tokens > 1 and r.t_last > r.t_first]
    out = {
        "url": args.url, "endpoint": args.endpoint, "clients": args.clients, "requests": len(results),
        "ok": len(ok), "errors": len(errors), "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
        "generated_tokens": tokens, "wall_s": wall, "throughput_tok_s": tokens / wall if wall > 0 else 0.0,
        "ttft_s": {"p50": percentile(ttft, 50), "p90": percentile(ttft, 90), "p99": percentile(ttft, 99),
                   "max": max(ttft) if ttft else float("nan")},
        "itl_s": {"p50": percentile(itl, 50), "p90": percentile(itl, 90), "p99": percentile(itl, 99),
                  "max": max(itl) if itl else float("nan")},
        "decode_tok_s_per_client": {"mean": statistics.mean(decode) if decode else float("nan"),
                                    "min": min(decode) if decode else float("nan")},
    }
    if args.json:
        def clean(v):  # JSON has no NaN: missing measurements become null
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return None if isinstance(v, float) and v != v else v
        print(json.dumps(clean(out), indent=1))
    else:
        print(f"loadgen: {args.clients} clients x {args.requests} request(s), {args.prompt_tokens}-token prompts, "
              f"max_tokens {args.max_tokens}, {args.endpoint} endpoint, {args.url}")
        print(f"  requests ok        {len(ok)} / {len(results)}")
        print(f"  generated tokens   {tokens}")
        print(f"  wall time          {wall:.2f} s")
        print(f"  throughput         {out['throughput_tok_s']:.1f} tok/s (aggregate output)")
        print(f"  TTFT               p50 {1e3 * out['ttft_s']['p50']:.1f} ms   p90 {1e3 * out['ttft_s']['p90']:.1f} ms"
              f"   p99 {1e3 * out['ttft_s']['p99']:.1f} ms   max {1e3 * out['ttft_s']['max']:.1f} ms")
        print(f"  inter-token        p50 {1e3 * out['itl_s']['p50']:.2f} ms   p90 {1e3 * out['itl_s']['p90']:.2f} ms"
              f"   p99 {1e3 * out['itl_s']['p99']:.2f} ms   max {1e3 * out['itl_s']['max']:.2f} ms")
        print(f"  decode per client  mean {out['decode_tok_s_per_client']['mean']:.1f} tok/s"
              f"   min {out['decode_tok_s_per_client']['min']:.1f} tok/s")
    for e in errors[:5]:
        print(f"  error: {e}", file=sys.stderr)
    return 0 if not errors else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=1, help="requests per client, one after another")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--endpoint", choices=["openai", "nanochat"], default="openai")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--vocab", type=int, default=0, help="draw prompt ids below this (default: from /v1/models)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warmup", action="store_true", help="one short request before timing")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if args.clients < 1 or args.prompt_tokens < 1 or args.max_tokens < 1 or args.requests < 1:
        ap.error("--clients, --requests, --prompt-tokens and --max-tokens must be positive")
    results, wall = asyncio.run(main_async(args))
    sys.exit(report(args, results, wall))


if __name__ == "__main__":
    main()
