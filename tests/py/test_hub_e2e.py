#!/usr/bin/env python3
"""test_hub_e2e.py: models by name from the Hugging Face Hub (`-m hf:...`,
`nanochat pull / list / rm`), end to end against a local mock of the Hub
(hub_mock.py: the API listing, resolve URLs redirecting LFS files to a
second "CDN" server, ETags, Range requests, injected faults). No network.

Repositories served: picochat as nanochat writes it (plus files a model
does not need: an optimizer shard, an older step, README, plot), picochat
converted to the transformers layout in 3 shards (tools/convert_to_hf.py),
a nanochat base folder and a model in a subfolder, a private copy, and
repositories with unsafe file names or no model.

References, none of them nanochat's own output: the golden greedy reply of
picochat made by PyTorch (tests/data/picochat/golden.json); sha256 and git
blob ids from hashlib; the bytes the mock served; huggingface_hub's own
scan_cache_dir() / hf_hub_download() / snapshot_download() (PyPI) reading
and writing the same cache.
"""
import hashlib
import json
import os
import pty
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
from hub_mock import MockHub, Repo, git_blob_id, sha256  # noqa: E402
import convert_to_hf  # noqa: E402

BIN = os.environ.get("NC_BIN", os.path.join(ROOT, "build", "nanochat"))
PICO = os.path.join(ROOT, "models", "picochat")
GOLDEN = json.load(open(os.path.join(ROOT, "tests", "data", "picochat", "golden.json")))
HELLO = next(c for c in GOLDEN["cases"] if c["name"] == "hello")
TOKEN = "hf_test_token_123"
NEEDED = ["model_004200.pt", "meta_004200.json", "tokenizer.pkl"]

failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Env:
    """A fresh HF_HOME for one scenario."""

    def __init__(self, hub, **extra):
        self.home = tempfile.mkdtemp(prefix="nc-hub-")
        self.cache = os.path.join(self.home, "hub")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        self.env.update(HF_HOME=self.home, HF_ENDPOINT=hub.hub_url, HF_HUB_DISABLE_TELEMETRY="1",
                        NANOCHAT_MODEL="/nonexistent")
        self.env.update(extra)

    def run(self, *args, timeout=120, **kw):
        return subprocess.run([BIN, *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kw)

    def repo_dir(self, repo_id):
        return os.path.join(self.cache, "models--" + repo_id.replace("/", "--"))

    def python(self, code):
        """Runs huggingface_hub in a child (it reads the environment at import)."""
        p = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-2000:])
        return json.loads(p.stdout.strip().splitlines()[-1])

    def done(self):
        shutil.rmtree(self.home, ignore_errors=True)


def chat_tokens(env, spec):
    p = env.run("chat", "-m", spec, "--json", "--temperature", "0", "--max-tokens", str(HELLO["max_tokens"]),
                "-p", HELLO["messages"][0]["content"])
    if p.returncode != 0:
        return None, p
    toks = json.loads(p.stdout)["tokens"]
    return toks[:len(HELLO["tokens"])], p


def make_repos(hub, tmp):
    pico = {n: read(os.path.join(PICO, n)) for n in os.listdir(PICO)}
    extra = {"optim_004200_rank0.pt": os.urandom(30000), "model_000100.pt": os.urandom(20000),
             "meta_000100.json": pico["meta_004200.json"]}
    hub.add(Repo("test/picochat", {**pico, **extra}))
    hf_dir = os.path.join(tmp, "picochat-hf")
    convert_to_hf.convert(PICO, hf_dir, shards=3)
    hf = {n: read(os.path.join(hf_dir, n)) for n in sorted(os.listdir(hf_dir))}
    hub.add(Repo("test/picochat-hf", {**hf, "README.md": b"# picochat, transformers layout\n"}))
    base = {"chatsft_checkpoints/d6/" + n: pico[n] for n in ("model_004200.pt", "meta_004200.json")}
    base.update({"base_checkpoints/d6/model_000900.pt": os.urandom(20000),
                 "base_checkpoints/d6/meta_000900.json": pico["meta_004200.json"],
                 "tokenizer/tokenizer.pkl": pico["tokenizer.pkl"], "README.md": b"base folder\n"})
    hub.add(Repo("test/multi", base))
    hub.add(Repo("test/picochat-sub", {"picochat/" + n: pico[n] for n in NEEDED} | {"README.md": b"sub\n"}))
    hub.add(Repo("test/private", {n: pico[n] for n in NEEDED}, private=True))
    hub.add(Repo("test/gated", {n: pico[n] for n in NEEDED}, gated=True))
    hub.add(Repo("test/evil", {**{n: pico[n] for n in NEEDED}, "../escape.txt": b"outside\n",
                               "/abs.txt": b"absolute\n"}))
    bad_index = json.dumps({"weight_map": {"model.embed_tokens.weight": "../outside.safetensors"}}).encode()
    hub.add(Repo("test/evil-index", {"config.json": hf["config.json"], "model.safetensors.index.json": bad_index,
                                     "tokenizer.json": hf["tokenizer.json"]}))
    hub.add(Repo("test/nomodel", {"README.md": b"nothing\n", "data.csv": b"a,b\n1,2\n"}))
    return pico, hf


def cache_consistent(env):
    """huggingface_hub's scan_cache_dir() on our cache: no warnings."""
    return env.python("import json; from huggingface_hub import scan_cache_dir\n"
                      "info = scan_cache_dir()\n"
                      "print(json.dumps([str(w) for w in info.warnings]))")


# ==== scenarios ====

def t_native(hub, pico):
    env = Env(hub)
    hub.clear_log()
    toks, p = chat_tokens(env, "hf:test/picochat")
    check(toks == HELLO["tokens"], f"native hf: chat differs from PyTorch's golden reply: {p.stderr[-500:]}")
    repo = hub.repos["test/picochat"]
    fetched = sorted(r[2].split("/resolve/")[1].split("/", 1)[1] for r in hub.requests("hub", "GET", "/resolve/"))
    check(fetched == sorted(NEEDED), f"only the needed files are downloaded, got {fetched}")
    rd = env.repo_dir("test/picochat")
    check(read(os.path.join(rd, "refs", "main")).decode() == repo.commit, "refs/main holds the commit")
    for n in NEEDED:
        link = os.path.join(rd, "snapshots", repo.commit, n)
        etag = sha256(pico[n]) if n.endswith((".pt", ".pkl")) else git_blob_id(pico[n])
        check(os.path.islink(link) and os.readlink(link) == "../../blobs/" + etag,
              f"{n}: relative link to blobs/<etag> ({os.readlink(link) if os.path.islink(link) else 'missing'})")
        check(read(link) == pico[n], f"{n}: cached bytes equal the served bytes")
    hub.clear_log()
    toks, p = chat_tokens(env, "hf:test/picochat")
    check(toks == HELLO["tokens"] and not hub.requests("hub", None, "/resolve/") and not hub.requests("cdn"),
          "a cached model is not downloaded again")
    env.done()


def t_hf_layout_parallel(hub):
    env = Env(hub)
    hub.clear_log()
    hub.faults["slow_bps"] = 6_000_000
    toks, p = chat_tokens(env, "hf:test/picochat-hf")
    hub.faults["slow_bps"] = 0
    check(toks == HELLO["tokens"], f"transformers layout via hf: differs from the golden reply: {p.stderr[-500:]}")
    names = sorted(r[2].rsplit("/", 1)[1] for r in hub.requests("hub", "GET", "/resolve/"))
    check(names == sorted(["config.json", "model.safetensors.index.json", "tokenizer.json",
                           "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                           "model-00003-of-00003.safetensors"]), f"HF set only (no README): {names}")
    check(hub.cdn_max_active >= 2, f"shards download in parallel (max {hub.cdn_max_active} at once)")
    check("starting" in p.stderr and "done" in p.stderr, "plain progress lines when stderr is not a terminal")
    env.done()


def t_base_and_subfolder(hub):
    env = Env(hub)
    hub.clear_log()
    p = env.run("info", "-m", "hf:test/multi", "--json")
    ok = check(p.returncode == 0, f"base folder repo: {p.stderr[-400:]}")
    if ok:
        info = json.loads(p.stdout)
        check(info["step"] == 4200 and "chatsft_checkpoints/d6" in info["source"] and info["tokenizer"],
              "base folder: chatsft > base, tokenizer/tokenizer.pkl")
    names = sorted(r[2].split("/resolve/")[1].split("/", 1)[1] for r in hub.requests("hub", "GET", "/resolve/"))
    check(names == ["chatsft_checkpoints/d6/meta_004200.json", "chatsft_checkpoints/d6/model_004200.pt",
                    "tokenizer/tokenizer.pkl"], f"base folder: only the chosen checkpoint: {names}")
    p = env.run("info", "-m", "hf:test/multi/chatsft_checkpoints/d6", "--json")
    check(p.returncode == 0 and json.loads(p.stdout)["tokenizer"], f"subfolder in a checkpoints tree: {p.stderr[-300:]}")
    p = env.run("info", "-m", "hf:test/picochat-sub")
    check(p.returncode != 0 and "hf:test/picochat-sub/picochat" in p.stderr,
          f"a model only in a subfolder: the error names it: {p.stderr.strip()}")
    toks, p = chat_tokens(env, "hf:test/picochat-sub/picochat")
    check(toks == HELLO["tokens"], f"hf:OWNER/NAME/SUBDIR: {p.stderr[-300:]}")
    p = env.run("info", "-m", "hf:test/nomodel")
    check(p.returncode != 0 and "no nanochat model" in p.stderr and "README.md" in p.stderr and "data.csv" in p.stderr,
          f"no model: the error lists what the repo holds: {p.stderr.strip()}")
    env.done()


def t_python_reads_ours(hub, pico):
    env = Env(hub)
    p = env.run("pull", "-q", "hf:test/picochat")
    check(p.returncode == 0 and p.stderr == "", f"pull -q is quiet: {p.stderr}")
    repo = hub.repos["test/picochat"]
    got = env.python(
        "import json, hashlib; from huggingface_hub import scan_cache_dir, hf_hub_download\n"
        "info = scan_cache_dir()\n"
        "r = [x for x in info.repos if x.repo_id == 'test/picochat'][0]\n"
        "rev = list(r.revisions)[0]\n"
        "paths = {n: hashlib.sha256(open(hf_hub_download('test/picochat', n, local_files_only=True), 'rb').read())"
        ".hexdigest() for n in %r}\n"
        "print(json.dumps({'refs': sorted(r.refs), 'commit': rev.commit_hash, 'files': r.nb_files,"
        " 'size': r.size_on_disk, 'warnings': [str(w) for w in info.warnings], 'sha': paths}))" % NEEDED)
    check(got["refs"] == ["main"] and got["commit"] == repo.commit, f"scan_cache_dir sees our ref: {got}")
    check(got["files"] == 3 and got["size"] == sum(len(pico[n]) for n in NEEDED) and not got["warnings"],
          f"scan_cache_dir: 3 files, their size, no warnings: {got}")
    check(got["sha"] == {n: sha256(pico[n]) for n in NEEDED}, "hf_hub_download(local_files_only) reads our files")
    p = env.run("pull", "hf:test/picochat")
    check(p.stdout.strip().endswith("snapshots/" + repo.commit), f"pull prints the snapshot folder: {p.stdout}")
    env.done()


def t_ours_reads_python(hub):
    env = Env(hub)
    env.python("import json; from huggingface_hub import snapshot_download\n"
               "p = snapshot_download('test/picochat-hf', allow_patterns=['*.json', '*.safetensors'])\n"
               "print(json.dumps(p))")
    hub.clear_log()
    toks, p = chat_tokens(env, "hf:test/picochat-hf")
    check(toks == HELLO["tokens"], f"a model huggingface_hub downloaded runs: {p.stderr[-300:]}")
    check(not hub.requests("hub", None, "/resolve/") and not hub.requests("cdn"),
          "a model huggingface_hub downloaded is not downloaded again")
    hub.clear_log()
    env.env["HF_HUB_OFFLINE"] = "1"
    toks, p = chat_tokens(env, "hf:test/picochat-hf")
    check(toks == HELLO["tokens"] and not hub.log, f"HF_HUB_OFFLINE=1 uses the cache, no request: {p.stderr[-300:]}")
    env.done()


def t_drop_and_resume(hub, pico):
    env = Env(hub)
    sha = sha256(pico["model_004200.pt"])
    hub.clear_log()
    hub.faults["drop_after"][sha] = 3_000_000
    p = env.run("pull", "hf:test/picochat")
    check(p.returncode == 0, f"pull survives a dropped connection: {p.stderr[-400:]}")
    ranges = [r[3] for r in hub.requests("cdn", "GET", sha)]
    check(ranges == [None, "bytes=3000000-"], f"resumed with a Range request from the byte it stopped at: {ranges}")
    blob = os.path.join(env.repo_dir("test/picochat"), "blobs", sha)
    check(os.path.exists(blob) and sha256(read(blob)) == sha, "the resumed file's checksum matches")
    env.done()


def t_corrupt(hub, pico):
    env = Env(hub)
    sha = sha256(pico["model_004200.pt"])
    hub.faults["corrupt"].add(sha)
    p = env.run("pull", "hf:test/picochat")
    hub.faults["corrupt"].discard(sha)
    check(p.returncode != 0 and "checksum" in p.stderr, f"a wrong checksum is refused: {p.stderr.strip()}")
    rd = env.repo_dir("test/picochat")
    blobs = os.listdir(os.path.join(rd, "blobs")) if os.path.isdir(os.path.join(rd, "blobs")) else []
    check(not any(b.startswith(sha) for b in blobs), f"nothing of the bad file in the cache: {blobs}")
    snap = os.path.join(rd, "snapshots", hub.repos["test/picochat"].commit, "model_004200.pt")
    check(not os.path.lexists(snap), "no snapshot link to the bad file")
    check(cache_consistent(env) == [], "the cache stays consistent for huggingface_hub")
    p = env.run("pull", "hf:test/picochat")
    check(p.returncode == 0, f"pull works once the server is fixed: {p.stderr[-300:]}")
    env.done()


def t_auth(hub):
    env = Env(hub)
    hub.clear_log()
    p = env.run("pull", "hf:test/private")
    check(p.returncode != 0 and "HF_TOKEN" in p.stderr, f"401 without a token says to set HF_TOKEN: {p.stderr.strip()}")
    p = env.run("pull", "hf:test/gated")
    check(p.returncode != 0 and "gated" in p.stderr and "HF_TOKEN" in p.stderr, f"403 gated: {p.stderr.strip()}")
    env.env["HF_TOKEN"] = TOKEN
    p = env.run("pull", "-q", "hf:test/gated")
    check(p.returncode == 0, f"a gated repo with a token: {p.stderr.strip()}")
    hub.clear_log()
    toks, p = chat_tokens(env, "hf:test/private")
    check(toks == HELLO["tokens"], f"HF_TOKEN opens a private repo: {p.stderr[-300:]}")
    check(TOKEN not in p.stdout + p.stderr, "the token is never printed")
    check(all(r[4] == "Bearer " + TOKEN for r in hub.requests("hub")), "the Hub gets the token")
    check(hub.requests("cdn") and all(r[4] is None for r in hub.requests("cdn")), "the CDN never gets the token")
    del env.env["HF_TOKEN"]
    with open(os.path.join(env.home, "token"), "w") as f:
        f.write(TOKEN + "\n")
    shutil.rmtree(env.cache)
    p = env.run("pull", "-q", "hf:test/private")
    check(p.returncode == 0, f"the token file $HF_HOME/token is read: {p.stderr.strip()}")
    env.env["HF_TOKEN"] = "wrong_token"
    p = env.run("pull", "hf:test/private")
    check(p.returncode != 0 and "HF_TOKEN" in p.stderr and "wrong_token" not in p.stderr,
          f"a refused token is reported, not printed: {p.stderr.strip()}")
    env.done()


def t_not_found(hub):
    env = Env(hub)
    p = env.run("pull", "hf:test/nope")
    check(p.returncode != 0 and "test/nope" in p.stderr and "not found" in p.stderr, f"404 repo: {p.stderr.strip()}")
    p = env.run("pull", "hf:test/picochat@nobranch")
    check(p.returncode != 0 and "revision 'nobranch'" in p.stderr, f"404 revision: {p.stderr.strip()}")
    hub.faults["missing"].add("model_004200.pt")
    p = env.run("pull", "hf:test/picochat")
    hub.faults["missing"].clear()
    check(p.returncode != 0 and "model_004200.pt not found" in p.stderr, f"404 file: {p.stderr.strip()}")
    for bad in ("hf:nope", "hf:a/b@", "hf:a/../b", "hf:a/b/../c", "hf:a--b/c"):
        p = env.run("info", "-m", bad)
        check(p.returncode != 0 and "hf:" in p.stderr and "Traceback" not in p.stderr, f"bad reference {bad}: {p.stderr.strip()}")
    env.done()


def _wait_for(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def t_sigint_resume(hub, pico):
    env = Env(hub)
    sha = sha256(pico["model_004200.pt"])
    part = os.path.join(env.repo_dir("test/picochat"), "blobs", sha + ".incomplete")
    hub.faults["slow_bps"] = 2_000_000
    proc = subprocess.Popen([BIN, "pull", "hf:test/picochat"], env=env.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started = _wait_for(lambda: os.path.exists(part) and os.path.getsize(part) >= 1_000_000, 30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    hub.faults["slow_bps"] = 0
    check(started and proc.returncode == 130 and "interrupted" in err, f"Ctrl-C stops the pull: {proc.returncode} {err[-300:]}")
    kept = os.path.getsize(part) if os.path.exists(part) else 0
    check(0 < kept < len(pico["model_004200.pt"]), f"the partial file is kept ({kept} bytes)")
    snap = os.path.join(env.repo_dir("test/picochat"), "snapshots", hub.repos["test/picochat"].commit)
    check(not os.path.lexists(os.path.join(snap, "model_004200.pt")), "no link to the unfinished file")
    hub.clear_log()
    p = env.run("pull", "hf:test/picochat")
    ranges = [r[3] for r in hub.requests("cdn", "GET", sha)]
    check(p.returncode == 0 and ranges == ["bytes=%d-" % kept], f"the re-run resumes at {kept}: {ranges} {p.stderr[-200:]}")
    check(sha256(read(os.path.join(snap, "model_004200.pt"))) == sha, "the resumed file's checksum matches")
    env.done()


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "http://127.0.0.1:%d" % port


def t_offline_and_no_network(hub):
    env = Env(hub, HF_HUB_OFFLINE="1")
    p = env.run("info", "-m", "hf:test/picochat")
    check(p.returncode != 0 and "HF_HUB_OFFLINE" in p.stderr and "not in the cache" in p.stderr,
          f"offline, not cached: clear error: {p.stderr.strip()}")
    env.env["HF_ENDPOINT"] = _closed_port()
    del env.env["HF_HUB_OFFLINE"]
    p = env.run("info", "-m", "hf:test/picochat")
    check(p.returncode != 0 and "cannot reach" in p.stderr and "not in the cache" in p.stderr,
          f"no network, not cached: says both: {p.stderr.strip()}")
    env.env["HF_ENDPOINT"] = hub.hub_url
    env.run("pull", "-q", "hf:test/picochat")
    env.env["HF_ENDPOINT"] = _closed_port()
    toks, p = chat_tokens(env, "hf:test/picochat")
    check(toks == HELLO["tokens"] and "cannot reach" in p.stderr and "using the cached" in p.stderr,
          f"no network, cached: runs from the cache and says so: {p.stderr.strip()}")
    env.env["HF_HUB_OFFLINE"] = "1"
    toks, p = chat_tokens(env, "hf:test/picochat")
    check(toks == HELLO["tokens"], f"HF_HUB_OFFLINE=1 with the model cached: {p.stderr.strip()}")
    env.done()


def t_disk_full(hub, pico):
    env = Env(hub)
    sha = sha256(pico["model_004200.pt"])

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))

    p = subprocess.run([BIN, "pull", "hf:test/picochat"], env=env.env, capture_output=True, text=True, timeout=60,
                       preexec_fn=limit)
    check(p.returncode != 0 and "space" in p.stderr and "resume" in p.stderr, f"disk full is reported: {p.stderr.strip()}")
    part = os.path.join(env.repo_dir("test/picochat"), "blobs", sha + ".incomplete")
    kept = os.path.getsize(part) if os.path.exists(part) else 0
    check(kept > 0, "the partial file is kept for resume")
    check(cache_consistent(env) == [], "the cache stays consistent")
    hub.clear_log()
    p = env.run("pull", "hf:test/picochat")
    ranges = [r[3] for r in hub.requests("cdn", "GET", sha)]
    check(p.returncode == 0 and ranges == ["bytes=%d-" % kept], f"with space again, the download resumes: {ranges}")
    env.done()


def t_list_rm(hub, pico):
    env = Env(hub)
    p = env.run("list", "--json")
    check(p.returncode == 0 and json.loads(p.stdout) == [], f"empty cache lists nothing: {p.stdout} {p.stderr}")
    env.run("pull", "-q", "hf:test/picochat")
    env.run("pull", "-q", "hf:test/multi")
    p = env.run("list", "--json")
    listed = {r["repo"]: r for r in json.loads(p.stdout)}
    r = listed.get("test/picochat")
    check(r and r["size"] == sum(len(pico[n]) for n in NEEDED) and r["revisions"][0]["refs"] == ["main"]
          and r["revisions"][0]["commit"] == hub.repos["test/picochat"].commit and r["last_used"] > time.time() - 600,
          f"list: repo, revision, size, last used: {r}")
    p = env.run("list")
    check("test/picochat" in p.stdout and "test/multi" in p.stdout and "13.7 MB" in p.stdout, f"list table: {p.stdout}")
    p = env.run("rm", "hf:test/picochat@main")
    check(p.returncode == 0 and "freed" in p.stdout, f"rm one revision: {p.stdout} {p.stderr}")
    left = env.python("import json; from huggingface_hub import scan_cache_dir\n"
                      "i = scan_cache_dir(); print(json.dumps(sorted((r.repo_id, len(r.revisions)) for r in i.repos)))")
    check(left == [["test/multi", 1], ["test/picochat", 0]], f"rm @main leaves an empty repo: {left}")
    p = env.run("rm", "hf:test/picochat")
    check(p.returncode == 0 and not os.path.exists(env.repo_dir("test/picochat")), "rm the whole repo")
    p = env.run("rm", "hf:test/picochat")
    check(p.returncode == 1 and "not in the cache" in p.stderr, f"rm of what is not cached: {p.stderr.strip()}")
    env.done()


def _run_on_tty(env, args, timeout=60):
    """Runs with stderr (and stdout) on a pseudo-terminal; returns (rc, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([BIN, *args], env=env.env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out, end = b"", time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), out.decode(errors="replace")


def t_progress_tty(hub):
    env = Env(hub)
    hub.faults["slow_bps"] = 8_000_000
    rc, out = _run_on_tty(env, ["pull", "hf:test/picochat"])
    hub.faults["slow_bps"] = 0
    check(rc == 0 and "\x1b[" in out and "[####" in out and "MB/s ETA" in out and "done" in out,
          f"a terminal gets redrawn bars with rate and ETA: {out[-300:]!r}")
    # Load progress: weights not in memory are read with a bar on a terminal. A single
    # safetensors file: its loader reads only the header, so the weights stay on disk
    # (a .pt's tensors are spread between ZIP headers the loader reads).
    snap = os.path.join(env.home, "picochat-hf1")
    convert_to_hf.convert(PICO, snap)
    model = os.path.join(snap, "model.safetensors")

    def evict():
        fd = os.open(model, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)

    evict()
    rc, out = _run_on_tty(env, ["chat", "-m", snap, "-p", "Hi", "--max-tokens", "1", "--device", "cpu"])
    check(rc == 0 and "reading weights" in out, f"load progress on a terminal: {out[-300:]!r}")
    evict()
    p = env.run("chat", "-m", snap, "-p", "Hi", "--max-tokens", "1", "--device", "cpu")
    check(p.returncode == 0 and p.stderr == "", f"no load progress when stderr is not a terminal: {p.stderr!r}")
    evict()
    rc, out = _run_on_tty(env, ["chat", "-m", snap, "-q", "-p", "Hi", "--max-tokens", "1", "--device", "cpu"])
    check(rc == 0 and "reading weights" not in out, "--quiet: no load progress")
    env.done()


def t_unsafe_paths(hub):
    env = Env(hub)
    p = env.run("pull", "hf:test/evil")
    check(p.returncode == 0 and "ignored 2 listed files" in p.stderr, f"unsafe listed names are ignored: {p.stderr.strip()}")
    found = [os.path.join(d, f) for d, _, fs in os.walk(env.home) for f in fs if "escape" in f or "abs.txt" in f]
    check(not found and not os.path.exists(os.path.join(env.cache, "escape.txt")), f"nothing written outside: {found}")
    p = env.run("pull", "hf:test/evil-index")
    check(p.returncode != 0 and "../outside.safetensors" in p.stderr and "not a file beside the index" in p.stderr,
          f"an index naming ../ is refused: {p.stderr.strip()}")
    env.done()


def t_tokenize_and_serve(hub, pico):
    import tiktoken  # noqa: F401  (tokenizer.pkl unpickles into a tiktoken Encoding)
    import pickle
    enc = pickle.loads(pico["tokenizer.pkl"])
    env = Env(hub)
    hub.clear_log()
    p = env.run("tokenize", "-m", "hf:test/picochat", input="Hello world")
    ids = [int(x) for x in p.stdout.split()] if p.returncode == 0 else None
    check(ids == enc.encode_ordinary("Hello world"), f"tokenize -m hf: (ids as tiktoken): {p.stdout} {p.stderr[-300:]}")
    names = [r[2].rsplit("/", 1)[1] for r in hub.requests("hub", "GET", "/resolve/")]
    check(names == ["tokenizer.pkl"], f"tokenize downloads only the tokenizer: {names}")
    from server_util import Server
    saved = dict(os.environ)
    os.environ.update(env.env)
    try:
        srv = Server(model=("-m", "hf:test/picochat"))
        try:
            status, body = srv.get("/v1/models")
            ids = [m["id"] for m in json.loads(body)["data"]] if status == 200 else []
            check(ids == ["test/picochat"], f"serve -m hf: names the model OWNER/NAME: {status} {body[:200]}")
        finally:
            srv.kill()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    env.done()


def main():
    hub = MockHub(TOKEN)
    tmp = tempfile.mkdtemp(prefix="nc-hub-repos-")
    try:
        pico, _ = make_repos(hub, tmp)
        for name, fn, args in [("native", t_native, (hub, pico)), ("hf layout", t_hf_layout_parallel, (hub,)),
                               ("base + subfolder", t_base_and_subfolder, (hub,)),
                               ("python reads ours", t_python_reads_ours, (hub, pico)),
                               ("ours reads python", t_ours_reads_python, (hub,)),
                               ("dropped connection", t_drop_and_resume, (hub, pico)),
                               ("wrong checksum", t_corrupt, (hub, pico)), ("auth", t_auth, (hub,)),
                               ("404", t_not_found, (hub,)), ("Ctrl-C + resume", t_sigint_resume, (hub, pico)),
                               ("offline / no network", t_offline_and_no_network, (hub,)),
                               ("disk full", t_disk_full, (hub, pico)), ("list + rm", t_list_rm, (hub, pico)),
                               ("progress on a terminal", t_progress_tty, (hub,)),
                               ("unsafe paths", t_unsafe_paths, (hub,)),
                               ("tokenize + serve", t_tokenize_and_serve, (hub, pico))]:
            t0, before = time.time(), len(failures)
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001
                check(False, f"{name}: {type(e).__name__}: {e}")
            print(f"{name}: {'ok' if len(failures) == before else 'FAILED'} ({time.time() - t0:.1f} s)", flush=True)
    finally:
        hub.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_hub_e2e: {checks} checks, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
