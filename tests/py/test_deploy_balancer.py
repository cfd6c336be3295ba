#!/usr/bin/env python3
"""test_deploy_balancer.py: deploy/haproxy/haproxy.cfg in front of three
`nanochat serve` replicas, under load and failures (issue 16).

Three replicas of the bundled picochat on free loopback ports, Debian's
HAProxy with the shipped configuration (only its NC_* addresses set), then:

  1. Affinity. Eight concurrent four-turn conversations with a key (an
     X-Session-Id header, or the OpenAI `user` field) spread over the replicas, each stays on one, and every
     follow-up turn is a prefix-cache hit there
     (nanochat_prefix_cache_hits_total rises on each replica by exactly its
     follow-ups); eight without a key are spread turn by turn. Then one
     request at a time, keyed requests interleaved with unkeyed ones: the
     unkeyed rotate over the replicas, each key stays on one.
  2. Load and failures, LOAD_SECONDS long: 24 concurrent clients stream
     multi-turn chats (half with a session key; OpenAI and nanochat
     protocols). One replica is killed with SIGKILL, restarted on its port
     and must rejoin (serve again); another gets SIGTERM (drain, exit 0) and
     is restarted too. Every request must end in time (per-request socket
     timeout: none hangs) with its protocol's final event, a clean error
     event, or, only for streams on the killed replica around the kill, a
     cut connection that the client sees as an error (the
     chunked body never terminated); a stream whose body ended without its
     final event (silent truncation) fails the test. Requests that reached
     a dead or draining replica before the balancer noticed are retried
     elsewhere, so no HTTP error reaches a client, and new requests keep
     succeeding in every stretch of the run.

Prints requests, outcomes by cause, TTFT percentiles and hit rates (the
numbers quoted in docs/deploy.md). Skips (exit 77) only when haproxy is not
installed (tools/install_deps.sh --test installs it).
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import ROOT, Checker, Server, sse_events  # noqa: E402

HAPROXY = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
                                           if os.access(p, os.X_OK)), None)
CONFIG = os.path.join(ROOT, "deploy", "haproxy", "haproxy.cfg")
PICOCHAT = os.path.join(ROOT, "models", "picochat")
LOAD_SECONDS = 60
CLIENTS = 24
REQUEST_TIMEOUT = 20  # seconds of silence before a request counts as hung
BLOCK = 64            # KV block: a prefix-cache hit reuses at least one
WORDS = ("river ocean mountain forest desert valley island canyon glacier meadow prairie volcano harbor "
         "lagoon plateau tundra delta marsh reef summit").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


class Balancer:
    """HAProxy with the shipped configuration, on loopback ports."""

    def __init__(self, replica_ports):
        self.port, self.stats_port = free_port(), free_port()
        env = dict(os.environ, NC_LB_BIND=f"127.0.0.1:{self.port}", NC_LB_STATS=f"127.0.0.1:{self.stats_port}")
        for i, p in enumerate(replica_ports):
            env[f"NC_REPLICA{i + 1}"] = f"127.0.0.1:{p}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="nc-haproxy-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", CONFIG], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def servers(self):
        """{replica name: status} from HAProxy's stats CSV ({} if unreachable)."""
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.stats_port, timeout=5)
            c.request("GET", "/;csv")
            rows = c.getresponse().read().decode().splitlines()
        except OSError:
            return {}
        head = rows[0].lstrip("# ").split(",")
        out = {}
        for line in rows[1:]:
            f = dict(zip(head, line.split(",")))
            if f.get("pxname") == "replicas" and f.get("svname", "").startswith("replica"):
                out[f["svname"]] = f["status"]
        return out

    def wait_status(self, want, timeout):
        """Waits until every replica named in `want` has that status."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.servers()
            if all(s.get(k) == v for k, v in want.items()):
                return True
            time.sleep(0.1)
        return False

    def read_log(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


def first_message(tag):
    """A first user message of well over one KV block (64 tokens), unique to
    the conversation from its first words, so only its own earlier turns can
    be a prefix-cache hit for it."""
    rng = random.Random(tag)
    return f"Conversation {tag}. Tell me what these words mean: " + " ".join(rng.choice(WORDS) for _ in range(45))


def stream_chat(port, messages, session, protocol, timeout=REQUEST_TIMEOUT):
    """One streamed chat turn through the balancer, its conversation key
    (None, or "user:ID" for the OpenAI `user` field, else an X-Session-Id).
    Returns a record: outcome
    ("ok", "error event", "http NNN", "cut", "truncated", "hang", "connect"),
    the replica that answered (X-Nanochat-Replica), the reply text, TTFT and
    cached prompt tokens (OpenAI usage)."""
    rec = {"t0": time.time(), "t1": None, "outcome": None, "replica": None, "text": "", "ttft": None,
           "cached": None, "session": session is not None}
    headers = {"Content-Type": "application/json"}
    if protocol == "openai":
        path, body = "/v1/chat/completions", {"messages": messages, "stream": True, "max_tokens": 40,
                                              "stream_options": {"include_usage": True}}
    else:
        path, body = "/chat/completions", {"messages": messages, "max_tokens": 40}
    if session and session.startswith("user:"):
        body["user"] = session[5:]
    elif session:
        headers["X-Session-Id"] = session
    started = False
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("POST", path, json.dumps(body), headers)
            r = c.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected) as e:
            rec["outcome"] = f"connect ({e.__class__.__name__})"
            return rec
        rec["replica"] = r.getheader("X-Nanochat-Replica")
        if r.status != 200:
            r.read()
            rec["outcome"] = f"http {r.status}"
            return rec
        started = True
        final = error = False
        for ev in sse_events(r):
            if ev == "[DONE]" or ev.get("done"):
                final = True
            elif "error" in ev:
                error = True
            elif protocol == "openai":
                if ev.get("usage"):
                    rec["cached"] = ev["usage"]["prompt_tokens_details"]["cached_tokens"]
                for ch in ev.get("choices", []):
                    piece = ch["delta"].get("content") or ""
                    if piece and rec["ttft"] is None:
                        rec["ttft"] = time.time() - rec["t0"]
                    rec["text"] += piece
            else:
                piece = ev.get("token", "")
                if piece and rec["ttft"] is None:
                    rec["ttft"] = time.time() - rec["t0"]
                rec["text"] += piece
        rec["outcome"] = ("error event" if error else "ok") if final else "truncated"
    except socket.timeout:
        rec["outcome"] = "hang"
    except (http.client.IncompleteRead, ConnectionError, http.client.RemoteDisconnected) as e:
        rec["outcome"] = "cut" if started else f"connect ({e.__class__.__name__})"
    finally:
        rec["t1"] = time.time()
    return rec


def conversation(port, tag, session, protocol, turns, out, stop_at=None):
    """Runs one conversation's turns in order; appends each turn's record to
    `out`. Stops early at a failed turn or once `stop_at` has passed."""
    messages = [{"role": "user", "content": first_message(tag)}]
    for turn in range(turns):
        if stop_at is not None and time.time() >= stop_at:
            return
        rec = stream_chat(port, messages, session, protocol)
        rec["turn"] = turn
        out.append(rec)
        if rec["outcome"] != "ok":
            return
        messages += [{"role": "assistant", "content": rec["text"] or "ok"},
                     {"role": "user", "content": f"And {random.choice(WORDS)}?"}]


def hits(replicas):
    return {name: r.metrics()["nanochat_prefix_cache_hits_total"] for name, r in replicas.items()}


def run_affinity(ck, lb, replicas):
    """Part 1: keyed conversations stay on one replica and hit its cache;
    unkeyed ones spread."""
    results = {}
    for keyed in (True, False):
        before = hits(replicas)
        recs = {k: [] for k in range(8)}
        ts = [threading.Thread(target=conversation, args=(lb.port, f"{'keyed' if keyed else 'plain'}-{k}",
                                                          (f"affinity-{k}" if k < 4 else f"user:affinity-{k}")
                                                          if keyed else None, "openai", 4, recs[k]))
              for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        delta = {n: v - before[n] for n, v in hits(replicas).items()}
        flat = [r for rs in recs.values() for r in rs]
        ck.check(len(flat) == 32 and all(r["outcome"] == "ok" for r in flat),
                 f"affinity phase ({'keyed' if keyed else 'no key'}): {[r['outcome'] for r in flat]}")
        served = {k: {r["replica"] for r in rs} for k, rs in recs.items()}
        followups = {n: sum(1 for r in flat if r["turn"] > 0 and r["replica"] == n) for n in replicas}
        if keyed:
            ck.check(all(len(s) == 1 for s in served.values()), f"keyed conversations moved: {served}")
            ck.check(len({r["replica"] for r in flat}) == 3, f"keyed conversations all on few replicas: {served}")
            ck.check(delta == {n: float(followups[n]) for n in replicas},
                     f"prefix hits {delta} != follow-up turns per replica {followups}")
            ck.check(all((r["cached"] or 0) >= BLOCK for r in flat if r["turn"] > 0),
                     f"keyed follow-ups without cached tokens: {[r['cached'] for r in flat if r['turn'] > 0]}")
        else:
            ck.check(len({r["replica"] for r in flat}) == 3, f"unkeyed requests did not spread: {served}")
            ck.check(sum(len(s) > 1 for s in served.values()) >= 2, f"unkeyed conversations stayed put: {served}")
        results[keyed] = {"hits": sum(delta.values()), "followups": sum(followups.values()),
                          "replicas": sorted({r["replica"] for r in flat})}
    return results


def run_interleaved(ck, lb):
    """Part 1b: one request at a time, cycling through a header key, a
    `user` key and two unkeyed requests: least-connections alone would
    rotate all four over the idle replicas; the keyed ones must not move."""
    seen = {"header": set(), "user": set(), "none": set()}
    for i in range(6):
        for kind, key in (("header", "interleaved"), ("user", "user:interleaved"), ("none", None), ("none", None)):
            r = stream_chat(lb.port, [{"role": "user", "content": f"hello {i}"}], key, "openai")
            ck.check(r["outcome"] == "ok", f"interleaved request: {r['outcome']}")
            seen[kind].add(r["replica"])
    ck.check(len(seen["header"]) == 1 and len(seen["user"]) == 1 and len(seen["none"]) >= 2,
             f"replicas seen by key: {seen}")


def run_load(ck, lb, replicas, ports):
    """Part 2: 24 streaming clients for LOAD_SECONDS while one replica is
    killed and restarted and another drained and restarted."""
    records, lock = [], threading.Lock()
    t_start = time.time()
    stop_at = t_start + LOAD_SECONDS

    def client(k):
        rng = random.Random(k)
        n = 0
        while time.time() < stop_at:
            out = []
            session = f"load-{k}-{n}" if k % 2 == 0 else None
            conversation(lb.port, f"load-{k}-{n}", session, "openai" if k % 4 < 3 else "nanochat",
                         rng.randint(2, 4), out, stop_at)
            with lock:
                records.extend(out)
            n += 1

    ts = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    for t in ts:
        t.start()
    events = {}

    def at(offset):
        time.sleep(max(0.0, t_start + offset - time.time()))

    at(0.25 * LOAD_SECONDS)
    events["kill"] = time.time()
    replicas["replica1"].proc.kill()  # SIGKILL: streams on it are cut mid-way
    replicas["replica1"].proc.wait()
    ck.check(lb.wait_status({"replica1": "DOWN"}, 10), f"killed replica not marked down: {lb.servers()}")
    at(0.4 * LOAD_SECONDS)
    replicas["replica1"].kill()
    replicas["replica1"] = Server("--threads", "1", "--kv-blocks", "128", model=("-m", PICOCHAT), port=ports[0])
    events["restart"] = time.time()
    ck.check(lb.wait_status({"replica1": "UP"}, 15), f"restarted replica did not rejoin: {lb.servers()}")
    events["rejoined"] = time.time()

    at(0.55 * LOAD_SECONDS)
    events["term"] = time.time()
    drained = replicas["replica2"]
    drained.proc.send_signal(signal.SIGTERM)
    try:
        code = drained.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        code = None
    events["term_exit"] = time.time()
    ck.check(code == 0, f"drained replica's exit status: {code}")
    at(0.75 * LOAD_SECONDS)
    drained.kill()
    replicas["replica2"] = Server("--threads", "1", "--kv-blocks", "128", model=("-m", PICOCHAT), port=ports[1])
    ck.check(lb.wait_status({"replica2": "UP"}, 15), f"drained replica did not rejoin: {lb.servers()}")

    for t in ts:
        t.join(timeout=LOAD_SECONDS + 2 * REQUEST_TIMEOUT)
    ck.check(not any(t.is_alive() for t in ts), "a load client never returned")
    return records, events, t_start


def check_load(ck, records, events, t_start):
    by = {}
    for r in records:
        by.setdefault(r["outcome"], []).append(r)
    ok = by.get("ok", [])
    ck.check(len(records) >= 200, f"only {len(records)} requests in {LOAD_SECONDS} s")
    ck.check(not by.get("hang"), f"{len(by.get('hang', []))} requests hung")
    ck.check(not by.get("truncated"), f"{len(by.get('truncated', []))} streams silently truncated: "
                                      f"{[(r['replica'], r['text'][-30:]) for r in by.get('truncated', [])][:5]}")
    connect = [k for k in by if k.startswith("connect")]
    ck.check(not connect, f"the balancer refused or dropped requests: {connect}")
    for r in by.get("cut", []):
        ck.check(r["replica"] == "replica1" and r["t0"] <= events["kill"] + 0.5 and r["t1"] >= events["kill"] - 0.5,
                 f"a stream was cut that was not on the killed replica at the kill: {r['replica']}, "
                 f"{r['t0'] - t_start:.1f}..{r['t1'] - t_start:.1f} s (kill at {events['kill'] - t_start:.1f} s)")
    for r in by.get("error event", []):
        ck.check(r["replica"] == "replica2" and r["t1"] >= events["term"],
                 f"an error event not caused by the drain: {r['replica']} at {r['t1'] - t_start:.1f} s")
    # Requests sent to a dead, restarting or draining replica had not
    # started: the balancer retries them elsewhere, so none fails.
    http_errors = sum(len(v) for k, v in by.items() if k.startswith("http"))
    ck.check(http_errors == 0, f"HTTP errors: {[k for k in by if k.startswith('http')]}")
    ck.check(len(ok) >= 0.97 * len(records), f"{len(ok)} of {len(records)} requests succeeded")
    # New requests keep succeeding: successes started in every 5 s stretch.
    for w in range(0, LOAD_SECONDS - 5, 5):
        n = sum(1 for r in ok if t_start + w <= r["t0"] < t_start + w + 5)
        ck.check(n > 0, f"no request started in {w}..{w + 5} s succeeded")
    rejoined = [r for r in ok if r["replica"] == "replica1" and r["t0"] > events["rejoined"]]
    ck.check(len(rejoined) > 0, "the restarted replica served nothing after rejoining")
    keyed = [r for r in ok if r["turn"] > 0 and r["session"] and r["cached"] is not None]
    plain = [r for r in ok if r["turn"] > 0 and not r["session"] and r["cached"] is not None]
    rate = lambda rs: sum(r["cached"] >= BLOCK for r in rs) / max(1, len(rs))  # noqa: E731
    # Keyed follow-ups miss only when their replica died or drained. Unkeyed
    # ones are reported, not judged: a client that sends its next turn as
    # soon as the last ends leaves its replica with the fewest connections,
    # so least-connections often picks it again.
    ck.check(rate(keyed) > 0.9, f"prefix-hit rate of keyed follow-ups under load: {rate(keyed):.2f}")
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    faults = [(events["kill"] - 1, events["rejoined"] + 2), (events["term"] - 1, events["term_exit"] + 2)]
    calm = [r["ttft"] for r in ok if r["ttft"] is not None and not any(a <= r["t0"] <= b for a, b in faults)]
    print(f"load: {len(records)} requests in {LOAD_SECONDS} s from {CLIENTS} clients; outcomes " +
          ", ".join(f"{k} {len(v)}" for k, v in sorted(by.items())) + f" (HTTP errors {http_errors})")
    ms = lambda xs, p: f"{percentile(xs, p) * 1000:.0f} ms"  # noqa: E731
    print(f"load: TTFT p50 {ms(ttft, 50)}, p99 {ms(ttft, 99)} (away from the faults: p50 {ms(calm, 50)}, "
          f"p99 {ms(calm, 99)}); follow-up prefix hits: keyed {rate(keyed):.0%} of {len(keyed)}, unkeyed {rate(plain):.0%} of {len(plain)}")
    print("load: per replica " + ", ".join(f"{n} {sum(1 for r in ok if r['replica'] == n)}"
                                           for n in ("replica1", "replica2", "replica3")))
    print(f"load: SIGKILL at {events['kill'] - t_start:.1f} s, restarted replica back in the pool "
          f"{events['rejoined'] - events['restart']:.1f} s after its start; SIGTERM at "
          f"{events['term'] - t_start:.1f} s, exited after {events['term_exit'] - events['term']:.1f} s")


def main():
    if not HAPROXY:
        print("skipped: haproxy not installed (tools/install_deps.sh --test)")
        return 77
    ck = Checker("test_deploy_balancer")
    t0 = time.time()
    ports = [free_port() for _ in range(3)]
    replicas, lb = {}, None
    try:
        for i, p in enumerate(ports):
            replicas[f"replica{i + 1}"] = Server("--threads", "1", "--kv-blocks", "128", model=("-m", PICOCHAT),
                                                 port=p)
        lb = Balancer(ports)
        up = {n: "UP" for n in replicas}
        ck.check(lb.wait_status(up, 15), f"replicas not up behind the balancer: {lb.servers()}")
        status, body = http.client.HTTPConnection("127.0.0.1", lb.stats_port, timeout=5), None
        status.request("GET", "/metrics")
        body = status.getresponse().read().decode()
        ck.check("haproxy_backend_active_servers" in body, "HAProxy's Prometheus metrics missing")

        aff = run_affinity(ck, lb, replicas)
        print(f"affinity: keyed conversations: {aff[True]['hits']:.0f} prefix hits for {aff[True]['followups']} "
              f"follow-up turns; unkeyed: {aff[False]['hits']:.0f} for {aff[False]['followups']}, "
              f"served by {', '.join(aff[False]['replicas'])}")
        run_interleaved(ck, lb)
        records, events, t_start = run_load(ck, lb, replicas, ports)
        check_load(ck, records, events, t_start)
        ck.check(lb.wait_status(up, 10), f"not every replica up at the end: {lb.servers()}")
        ck.check(all(r.alive() for r in replicas.values()), "a replica died")
    except Exception:
        if lb:
            sys.stderr.write("---- haproxy log (tail) ----\n" + lb.read_log()[-3000:] + "\n")
        raise
    finally:
        if ck.failed and lb:
            sys.stderr.write("---- haproxy log (tail) ----\n" + lb.read_log()[-3000:] + "\n")
        if lb:
            lb.stop()
        for r in replicas.values():
            r.kill()
    print(f"test time {time.time() - t0:.0f} s")
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
