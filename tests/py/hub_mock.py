"""hub_mock.py: a local stand-in for the Hugging Face Hub, for tests/py/test_hub_e2e.py.

Two threaded http.server instances on 127.0.0.1, like the Hub and the CDN
it redirects large files to:

  hub  GET  /api/models/{owner}/{name}/revision/{rev}[?blobs=true]
            {"id", "sha", "siblings": [{"rfilename", "size", "blobId", "lfs"}]}
            (sizes, blob ids and lfs only with blobs=true, as the Hub does)
       HEAD/GET /{owner}/{name}/resolve/{rev}/{path}
            LFS file: 302 to the CDN with X-Repo-Commit, X-Linked-Etag (sha256),
            X-Linked-Size; other files: 200 with ETag (git blob id), Range served
       errors as the Hub words them: 401 + X-Error-Code RepoNotFound for a
       private repository without its token, 403 GatedRepo, 404 RepoNotFound /
       RevisionNotFound / EntryNotFound
  cdn  GET  /blob/{sha256}?sig=...   the bytes, with Range (206 + Content-Range)

What the tests check the client against comes from Python itself (hashlib
for sha256 and git blob ids, the served bytes), never from nanochat.

Faults, set on MockHub.faults before a request:
  drop_after[sha256] = n   next GET of that blob sends its headers, n bytes, then
                           closes the connection (once)
  corrupt                  set of sha256 whose bytes are served with one byte changed
  slow_bps                 CDN throughput in bytes per second (0: full speed)
  missing                  set of repository paths that 404 although listed
"""
import hashlib
import http.server
import json
import re
import socketserver
import threading
import time
import urllib.parse


def git_blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def is_lfs(path, data):
    """The Hub stores weights and large files in LFS; text files in git."""
    return len(data) > 10_000 or path.endswith((".pt", ".safetensors", ".pkl", ".png"))


class Repo:
    def __init__(self, repo_id, files, private=False, revisions=None, gated=False):
        self.repo_id, self.files, self.private, self.gated = repo_id, dict(files), private, gated
        self.commit = hashlib.sha1(("commit " + repo_id).encode()).hexdigest()
        self.revisions = {"main": self.commit, self.commit: self.commit}
        self.revisions.update(revisions or {})
        self.sha = {p: sha256(d) for p, d in self.files.items()}
        self.blob_id = {p: git_blob_id(d) for p, d in self.files.items()}

    def sibling(self, path, blobs):
        data = self.files[path]
        e = {"rfilename": path}
        if blobs:
            e["size"] = len(data)
            e["blobId"] = self.blob_id[path]
            if is_lfs(path, data):
                e["lfs"] = {"sha256": self.sha[path], "size": len(data), "pointerSize": 134}
        return e


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MockHub:
    def __init__(self, token="hf_test_token_123"):
        self.repos, self.token = {}, token
        self.faults = {"drop_after": {}, "corrupt": set(), "slow_bps": 0, "missing": set()}
        self.log = []  # (server, method, path, range header, authorization header)
        self.lock = threading.Lock()
        self.cdn_active = self.cdn_max_active = 0
        self.hub = _Server(("127.0.0.1", 0), self._handler("hub"))
        self.cdn = _Server(("127.0.0.1", 0), self._handler("cdn"))
        self.hub_url = "http://127.0.0.1:%d" % self.hub.server_address[1]
        self.cdn_url = "http://127.0.0.1:%d" % self.cdn.server_address[1]
        for s in (self.hub, self.cdn):
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def add(self, repo):
        self.repos[repo.repo_id] = repo
        return repo

    def close(self):
        for s in (self.hub, self.cdn):
            s.shutdown()
            s.server_close()

    def requests(self, server=None, method=None, contains=""):
        with self.lock:
            return [r for r in self.log if (server is None or r[0] == server) and (method is None or r[1] == method)
                    and contains in r[2]]

    def clear_log(self):
        with self.lock:
            self.log.clear()
            self.cdn_max_active = 0

    def blob(self, sha):
        for r in self.repos.values():
            for p, s in r.sha.items():
                if s == sha:
                    return r.files[p]
        return None

    def _handler(self, which):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._route(head=True)

            def do_GET(self):
                self._route(head=False)

            def _route(self, head):
                with hub.lock:
                    hub.log.append((which, self.command, self.path, self.headers.get("Range"),
                                    self.headers.get("Authorization")))
                if which == "cdn":
                    return hub._cdn(self, head)
                return hub._hub(self, head)

        return Handler

    # ==== responses ====

    @staticmethod
    def _send(h, status, body=b"", headers=None, head=False):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _error(self, h, status, code, head):
        body = json.dumps({"error": code}).encode()
        self._send(h, status, body, {"X-Error-Code": code, "X-Error-Message": code,
                                     "Content-Type": "application/json"}, head)

    def _authorized(self, h, repo):
        return not (repo.private or repo.gated) or h.headers.get("Authorization") == "Bearer " + self.token

    def _refuse(self, h, repo, head):
        """The Hub's answer to a request it does not authorize."""
        if repo is not None and repo.gated:
            return self._error(h, 403, "GatedRepo", head)
        return self._error(h, 401 if repo is not None or "Authorization" not in h.headers else 404, "RepoNotFound", head)

    def _hub(self, h, head):
        url = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(url.path)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path)
        if m:
            repo = self.repos.get(m.group(1))
            if repo is None or not self._authorized(h, repo):
                return self._refuse(h, repo, head)
            commit = repo.revisions.get(m.group(2))
            if commit is None:
                return self._error(h, 404, "RevisionNotFound", head)
            blobs = "blobs=true" in (url.query or "")
            body = json.dumps({"id": repo.repo_id, "sha": commit, "private": repo.private,
                               "siblings": [repo.sibling(p, blobs) for p in repo.files]}).encode()
            return self._send(h, 200, body, {"Content-Type": "application/json"}, head)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
        if m:  # huggingface_hub's snapshot_download lists files here
            repo = self.repos.get(m.group(1))
            if repo is None or not self._authorized(h, repo):
                return self._refuse(h, repo, head)
            if m.group(2) not in repo.revisions:
                return self._error(h, 404, "RevisionNotFound", head)
            entries = []
            for p in sorted(repo.files):
                e = {"type": "file", "oid": repo.blob_id[p], "size": len(repo.files[p]), "path": p}
                if is_lfs(p, repo.files[p]):
                    e["lfs"] = {"oid": repo.sha[p], "size": len(repo.files[p]), "pointerSize": 134}
                entries.append(e)
            return self._send(h, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, head)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if not m:
            return self._error(h, 404, "NotFound", head)
        repo = self.repos.get(m.group(1))
        if repo is None or not self._authorized(h, repo):
            return self._refuse(h, repo, head)
        commit = repo.revisions.get(m.group(2))
        if commit is None:
            return self._error(h, 404, "RevisionNotFound", head)
        fpath = m.group(3)
        if fpath not in repo.files or fpath in self.faults["missing"]:
            return self._error(h, 404, "EntryNotFound", head)
        data = repo.files[fpath]
        common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if is_lfs(fpath, data):
            loc = "%s/blob/%s?sig=presigned" % (self.cdn_url, repo.sha[fpath])
            common.update({"Location": loc, "X-Linked-Etag": '"%s"' % repo.sha[fpath],
                           "X-Linked-Size": str(len(data)), "ETag": '"%s"' % repo.blob_id[fpath]})
            return self._send(h, 302, b"", common, head)
        common["ETag"] = '"%s"' % repo.blob_id[fpath]
        return self._serve_bytes(h, data, common, head, throttle=False)

    def _cdn(self, h, head):
        m = re.fullmatch(r"/blob/([0-9a-f]{64})\?sig=presigned", h.path)
        data = self.blob(m.group(1)) if m else None
        if data is None:
            return self._send(h, 403, b"AccessDenied", {}, head)
        sha = m.group(1)
        if sha in self.faults["corrupt"]:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        with self.lock:
            self.cdn_active += 1
            self.cdn_max_active = max(self.cdn_max_active, self.cdn_active)
        try:
            return self._serve_bytes(h, data, {"ETag": '"cdn-%s"' % sha[:16]}, head, throttle=True, sha=sha)
        finally:
            with self.lock:
                self.cdn_active -= 1

    def _serve_bytes(self, h, data, headers, head, throttle, sha=None):
        start, status = 0, 200
        rng = h.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            if not m:
                return self._send(h, 416, b"", headers, head)
            start = int(m.group(1))
            if start >= len(data):
                return self._send(h, 416, b"", dict(headers, **{"Content-Range": "bytes */%d" % len(data)}), head)
            status = 206
            headers = dict(headers, **{"Content-Range": "bytes %d-%d/%d" % (start, len(data) - 1, len(data))})
        body = data[start:]
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if head:
            return
        drop = self.faults["drop_after"].pop(sha, None) if sha else None
        if drop is not None:
            h.wfile.write(body[:drop])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        bps = self.faults["slow_bps"] if throttle else 0
        chunk = 16384
        try:
            for off in range(0, len(body), chunk):
                h.wfile.write(body[off:off + chunk])
                if bps:
                    h.wfile.flush()
                    time.sleep(chunk / bps)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
