#!/usr/bin/env bash
# tools/install_deps.sh: installs what building and running nanochat needs
# from Debian's packages; with --test, also what the test suite needs
# (clang for the fuzzers, chromium for the browser test, HAProxy for the
# load-balancer test, and from PyPI the Python reference tools tiktoken,
# the openai client and selenium, and kubernetes-validate for deploy/k8s/).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PKGS=(build-essential pkg-config libpcre2-dev libcjson-dev libmicrohttpd-dev libedit-dev libcurl4-openssl-dev libssl-dev)
PIP=()
if [ "${1:-}" = "--test" ]; then
    PKGS+=(clang libclang-rt-dev python3 python3-pip chromium chromium-driver haproxy)
    PIP+=(tiktoken numpy openai selenium huggingface_hub kubernetes-validate==1.37.0)
fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
if [ ${#PIP[@]} -gt 0 ]; then
    python3 -m pip install -q "${PIP[@]}" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "${PIP[@]}"
fi
