#!/usr/bin/env python3
"""test_deploy_files.py: the files in deploy/ are valid, agree with each
other and with the server, and the probe works against a real server
(issue 16).

  - deploy/k8s: every resource of the base validates with
    kubernetes-validate (strict: no unknown field) against Kubernetes
    K8S_VERSION; with kubectl installed, so do the Kustomize builds of the
    base and of overlays/cpu, and the balancer's generated ConfigMap holds
    deploy/haproxy/haproxy.cfg byte for byte. A Deployment with a misspelt
    field must be rejected (the validator really runs).
  - Agreement: every pod's grace period covers its preStop drain plus the
    server's own shutdown (NC_SHUTDOWN_GRACE_S in src/server/server.c, then
    2 s for cancellations); readiness probes ask /health?ready; the
    balancer's DNS name is the headless Service's.
  - deploy/haproxy/haproxy.cfg passes `haproxy -c` with static replicas and
    with Kubernetes DNS discovery.
  - deploy/systemd/nanochat.service passes `systemd-analyze verify` without
    a warning.
  - deploy/image/nanochat-probe against `nanochat serve`: `ready` fails while
    the model loads and succeeds once it is in; `drain` returns only after
    the stream in flight has ended, and at once on an idle server.

Skips (exit 77) only when kubernetes-validate is missing
(tools/install_deps.sh --test installs it); the haproxy, kubectl and
systemd-analyze checks are reported as not run when their tool is absent.
"""
import copy
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import NC_BIN, ROOT, Checker, Server, make_big_tokenizer  # noqa: E402

K8S_VERSION = "1.32.0"
DEPLOY = os.path.join(ROOT, "deploy")
PROBE = os.path.join(DEPLOY, "image", "nanochat-probe")


def tool(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                      None)


def load_docs(text):
    import yaml
    return [d for d in yaml.safe_load_all(text) if d]


def validate(ck, docs, where):
    import kubernetes_validate
    for d in docs:
        name = f"{where}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            ck.check(True, name)
        except Exception as e:  # ValidationError, or a schema the version lacks
            ck.check(False, f"{name} does not validate against Kubernetes {K8S_VERSION}: {e}")


def check_validator_runs(ck, docs):
    import kubernetes_validate
    dep = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/", "port": 1}
    try:
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
        ck.check(False, "a misspelt field passed validation")
    except kubernetes_validate.ValidationError:
        ck.check(True, "misspelt field rejected")


def server_shutdown_seconds():
    with open(os.path.join(ROOT, "src", "server", "server.c")) as f:
        grace = float(re.search(r"#define NC_SHUTDOWN_GRACE_S ([0-9.]+)", f.read()).group(1))
    return grace + 2.0


def check_agreement(ck, docs, where):
    deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    ck.check("nanochat" in deps and "nanochat-balancer" in deps, f"{where}: deployments {sorted(deps)}")
    pod = deps["nanochat"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    ck.check(cmd[:2] == ["nanochat-probe", "drain"], f"{where}: preStop {cmd}")
    drain = float(cmd[2]) + (float(cmd[3]) if len(cmd) > 3 else 5.0)
    need = drain + server_shutdown_seconds()
    ck.check(pod["terminationGracePeriodSeconds"] >= need + 5,
             f"{where}: grace {pod['terminationGracePeriodSeconds']} s < drain {drain} s + shutdown "
             f"{server_shutdown_seconds()} s + 5")
    ck.check(c["readinessProbe"]["httpGet"]["path"] == "/health?ready", f"{where}: readiness {c['readinessProbe']}")
    ck.check(c["livenessProbe"]["httpGet"]["path"] == "/health", f"{where}: liveness {c['livenessProbe']}")
    ann = deps["nanochat"]["spec"]["template"]["metadata"]["annotations"]
    ck.check(ann.get("prometheus.io/path") == "/metrics" and ann.get("prometheus.io/port") == "8000",
             f"{where}: scrape annotations {ann}")
    headless = [d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"]
    lb = deps["nanochat-balancer"]["spec"]["template"]["spec"]["containers"][0]
    dns = {e["name"]: e.get("value") for e in lb["env"]}.get("NC_REPLICAS_DNS", "")
    ck.check(len(headless) == 1 and dns.startswith(headless[0]["metadata"]["name"] + "."),
             f"{where}: balancer DNS {dns} vs headless services {[h['metadata'] for h in headless]}")
    hpa = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    ck.check(len(hpa) == 1 and hpa[0]["spec"]["metrics"][0]["pods"]["metric"]["name"] == "nanochat_queue_depth",
             f"{where}: autoscaler {hpa}")


def check_k8s(ck):
    base = os.path.join(DEPLOY, "k8s", "base")
    docs = []
    for path in sorted(glob.glob(os.path.join(base, "*.yaml"))):
        if os.path.basename(path) != "kustomization.yaml":
            with open(path) as f:
                docs += load_docs(f.read())
    validate(ck, docs, "deploy/k8s/base")
    check_validator_runs(ck, docs)
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("not run: Kustomize builds (no kubectl)")
        return
    with open(os.path.join(DEPLOY, "haproxy", "haproxy.cfg")) as f:
        lb_config = f.read()
    for overlay in ("base", "overlays/cpu"):
        p = subprocess.run([kubectl, "kustomize", os.path.join(DEPLOY, "k8s", overlay)], capture_output=True,
                           text=True, timeout=120)
        ck.check(p.returncode == 0, f"kubectl kustomize deploy/k8s/{overlay}: {p.stderr[-500:]}")
        if p.returncode:
            continue
        built = load_docs(p.stdout)
        validate(ck, built, f"deploy/k8s/{overlay}")
        check_agreement(ck, built, f"deploy/k8s/{overlay}")
        maps = [d for d in built if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("nanochat-balancer")]
        ck.check(len(maps) == 1 and maps[0]["data"].get("haproxy.cfg") == lb_config,
                 f"{overlay}: the balancer's ConfigMap is not deploy/haproxy/haproxy.cfg")
        images = {c["image"] for d in built if d["kind"] == "Deployment"
                  for c in d["spec"]["template"]["spec"]["containers"]}
        ck.check(("nanochat:cpu" if overlay.endswith("cpu") else "nanochat:cuda") in images, f"{overlay}: {images}")


def check_haproxy(ck):
    haproxy = tool("haproxy")
    if not haproxy:
        print("not run: haproxy -c (no haproxy)")
        return
    cfg = os.path.join(DEPLOY, "haproxy", "haproxy.cfg")
    for extra in ({}, {"NC_REPLICAS_DNS": "localhost:8000"}):
        p = subprocess.run([haproxy, "-c", "-f", cfg], capture_output=True, text=True, env=dict(os.environ, **extra))
        ck.check(p.returncode == 0 and "[WARNING]" not in p.stdout + p.stderr,
                 f"haproxy -c {extra}: {(p.stdout + p.stderr)[-800:]}")


def check_systemd(ck):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("not run: systemd-analyze verify (no systemd-analyze)")
        return
    with open(os.path.join(DEPLOY, "systemd", "nanochat.service")) as f:
        unit = f.read()
    # The unit names the installed paths; verify checks that they exist.
    unit = unit.replace("/opt/nanochat/bin/nanochat-probe", PROBE).replace("/opt/nanochat/bin/nanochat ", NC_BIN + " ")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "nanochat.service")
        with open(path, "w") as f:
            f.write(unit)
        p = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=60)
    ck.check(p.returncode == 0 and not (p.stdout + p.stderr).strip(),
             f"systemd-analyze verify: {p.returncode} {(p.stdout + p.stderr)[-800:]}")


def probe(port, *args, timeout=60):
    return subprocess.run([PROBE, *args], env=dict(os.environ, NANOCHAT_PORT=str(port)), capture_output=True,
                          text=True, timeout=timeout)


def check_probe(ck, tmp):
    tok = os.path.join(tmp, "tokenizer.pkl")
    make_big_tokenizer(tok)
    srv = Server("--tokenizer", tok, model=("--random", "8,1024,8"), wait_ready=False)
    try:
        # The random model takes seconds to build (test_server_lifecycle
        # relies on the same): the probe runs while it loads.
        rc = probe(srv.port, "ready").returncode
        loading = json.loads(srv.get("/health")[1])["ready"] is False
        ck.check(loading and rc == 1, f"probe ready while loading: exit {rc} (still loading: {loading})")
        ck.check(probe(srv.port, "live").returncode == 0, "probe live while loading")
        deadline = time.time() + 60
        while time.time() < deadline and probe(srv.port, "ready").returncode != 0:
            time.sleep(0.2)
        ck.check(json.loads(srv.get("/health")[1])["ready"] is True, "server not ready")
        t0 = time.time()
        ck.check(probe(srv.port, "drain", "10", "0").returncode == 0 and time.time() - t0 < 2, "drain when idle")

        ended = {}

        def stream():
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            c.request("POST", "/chat/completions", json.dumps(
                {"messages": [{"role": "user", "content": "go"}], "max_tokens": 100, "temperature": 0}))
            c.getresponse().read()
            ended["t"] = time.time()

        t = threading.Thread(target=stream)
        t.start()
        time.sleep(0.3)
        t_drain = time.time()
        p = probe(srv.port, "drain", "30", "0")
        t_drained = time.time()
        t.join(timeout=60)
        # The server is done when its last bytes are in the socket; a busy
        # client may read them a little later.
        ck.check(p.returncode == 0 and "t" in ended and ended["t"] - 1.0 <= t_drained <= ended["t"] + 2.5,
                 f"drain returned {t_drained - ended.get('t', 0):+.1f} s after the stream ended (exit {p.returncode})")
        print(f"drain: waited {t_drained - t_drain:.1f} s for a stream that ended at the client after "
              f"{ended.get('t', 0) - t_drain:.1f} s")
    finally:
        srv.kill()
    ck.check(probe(srv.port, "ready").returncode == 1, "probe ready with nothing listening")
    ck.check(probe(srv.port, "bogus").returncode == 2, "probe usage error")


def main():
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        print("skipped: kubernetes-validate not installed (tools/install_deps.sh --test)")
        return 77
    ck = Checker("test_deploy_files")
    check_k8s(ck)
    check_haproxy(ck)
    check_systemd(ck)
    tmp = tempfile.mkdtemp(prefix="nc-deploy-")
    try:
        check_probe(ck, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
