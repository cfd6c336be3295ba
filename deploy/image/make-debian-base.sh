#!/usr/bin/env bash
# deploy/image/make-debian-base.sh: a Debian 12 "slim" base image made locally with
# debootstrap from Debian's packages, for building deploy/Containerfile where
# no image registry can be reached (docs/deploy.md):
#
#   sudo deploy/image/make-debian-base.sh [IMAGE] [MIRROR]
#   podman build -f deploy/Containerfile --build-arg BASE=localhost/debian:bookworm-slim -t nanochat:cpu .
#
# IMAGE defaults to localhost/debian:bookworm-slim; MIRROR to debootstrap's
# default. Like the registry's debian:bookworm-slim it is a minbase system
# without documentation, manual pages, translations or package lists, and
# dpkg is told to leave those out of later installs too.
set -euo pipefail
IMAGE=${1:-localhost/debian:bookworm-slim}
MIRROR=${2:-}
command -v debootstrap >/dev/null || { echo "make-debian-base: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
command -v podman >/dev/null || { echo "make-debian-base: needs podman (apt-get install podman)" >&2; exit 1; }
root=$(mktemp -d /tmp/nanochat-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" $MIRROR >"$root.log" 2>&1 ||
    { tail -n 20 "$root.log" >&2; echo "make-debian-base: debootstrap failed (log: $root.log)" >&2; exit 1; }
rm -f "$root.log"
cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
cat >"$root/etc/apt/apt.conf.d/slim" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
CFG
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
       "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
tar --numeric-owner -C "$root" -c . | podman import -q --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "make-debian-base: $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes)"
