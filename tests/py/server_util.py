"""server_util.py: shared helpers of the server tests (tests/py/test_server_*.py).

Server(...) starts `nanochat serve` ($NC_BIN, default build/nanochat) on a
free loopback port (--port 0, or the given port; the port is read from its
"listening on" line), waits until /health says ready, and kills it on exit. The test
model is tests/data/server (tools/make_server_fixtures.py): a tiny V1
checkpoint whose PyTorch greedy generations are in cases.json.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "server")
NC_BIN = os.environ.get("NC_BIN") or os.path.join(ROOT, "build", "nanochat")
# POST routes take JSON only (415 otherwise).
JSON = {"Content-Type": "application/json"}


SPLIT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
         r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
SPECIALS = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
            "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]


def make_big_tokenizer(path):
    """A 65536-entry tokenizer.pkl (a pickled tiktoken.Encoding, as nanochat
    saves one) for --random models, whose vocab is 65536: the 256 bytes,
    letter pairs, "wNNNNN " words (so random output reads as words), and
    nanochat's nine special tokens at the last ids."""
    import pickle
    import tiktoken
    ranks = {bytes([i]): i for i in range(256)}
    letters = b"abcdefghijklmnopqrstuvwxyz "
    for a in letters:
        for b in letters:
            ranks[bytes([a, b])] = len(ranks)
    n = 65536 - len(SPECIALS)
    i = 0
    while len(ranks) < n:
        ranks[b"w%05d " % i] = len(ranks)
        i += 1
    enc = tiktoken.Encoding(name="random-model-test", pat_str=SPLIT, mergeable_ranks=ranks,
                            special_tokens={s: n + k for k, s in enumerate(SPECIALS)})
    with open(path, "wb") as f:
        pickle.dump(enc, f)


def free_port():
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until_close(sock, timeout=None):
    """Everything a socket receives until the peer closes it (or `timeout`
    seconds of silence, or a reset)."""
    if timeout is not None:
        sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return got


def load_cases():
    with open(os.path.join(DATA, "cases.json"), encoding="utf-8") as f:
        return json.load(f)


class Server:
    def __init__(self, *extra, model=("-m", DATA), ready_timeout=60, wait_ready=True, port=0, env=None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="nc-serve-", suffix=".log", delete=False)
        device = [] if "--devices" in extra else ["--device", "cpu"]  # --devices names every engine's
        cmd = [NC_BIN, "serve", *model, *device, "--host", "127.0.0.1", "--port", str(port), *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        # A given port need not be read from the log (quiet at --log-level warn).
        self.port = port or None
        deadline = time.time() + ready_timeout
        while time.time() < deadline and self.port is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.read_log())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.read_log()}")
            else:
                time.sleep(0.05)
        if self.port is None:
            self.kill()
            raise RuntimeError("server did not start listening:\n" + self.read_log())
        self.base = f"http://127.0.0.1:{self.port}"
        while wait_ready and time.time() < deadline:
            try:
                status, body = self.get("/health")
            except ConnectionRefusedError:
                status, body = None, b""
            if status == 200 and json.loads(body)["ready"]:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.read_log()}")
            time.sleep(0.05)
        else:
            if wait_ready:
                self.kill()
                raise RuntimeError("server never became ready:\n" + self.read_log())

    def read_log(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, headers=None, timeout=60):
        """One request; a dict or list body is sent as JSON (with its Content-Type)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data, r

    def get(self, path):
        status, data, _ = self.request("GET", path)
        return status, data

    def post(self, path, body, headers=None):
        status, data, _ = self.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        return status, data

    def metrics(self):
        status, text = self.get("/metrics")
        assert status == 200, status
        out = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            sys.stderr.write("---- server log ----\n" + self.read_log()[-4000:] + "\n")
        self.kill()


class Checker:
    """Counts checks and failures; prints a summary; exit code for sys.exit."""

    def __init__(self, name):
        self.name, self.n, self.failed = name, 0, 0

    def check(self, cond, msg):
        self.n += 1
        if not cond:
            self.failed += 1
            print(f"FAIL: {msg}", flush=True)
        return cond

    def summary(self):
        print(f"{self.name}: {self.n} checks, {self.failed} failed")
        return 1 if self.failed else 0


def sse_events(resp):
    """Parsed `data:` payloads of a text/event-stream http.client response."""
    buf = b""
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    payload = line[6:]
                    yield payload.decode() if payload == b"[DONE]" else json.loads(payload)
