#!/bin/sh
# deploy/image/stage.sh: the two halves of the images' multi-stage build
# (deploy/Containerfile, deploy/Containerfile.cuda), run from the source tree.
#
#   stage.sh collect BINARY DIR   in the build stage: put the binary, the
#                                 probe and the bundled picochat under
#                                 DIR/opt/nanochat, and write the list of
#                                 packages that hold the shared libraries the
#                                 binary loads; a library no package holds
#                                 (a CUDA toolkit copied in by hand) is
#                                 copied to DIR/opt/nanochat/lib instead
#   stage.sh install              in the runtime stage, after DIR was copied
#                                 to /: install those packages (the build's
#                                 distribution, so the names match) and
#                                 ca-certificates, make
#                                 /opt/nanochat/lib known to the loader, and
#                                 create the user `nanochat` (uid 10001) and
#                                 its cache directory /var/cache/nanochat
#
# Listing packages rather than copying the libraries keeps the runtime stage
# a plain Debian/Ubuntu system: its libraries come with their copyright files
# and get security updates by rebuilding the image.
set -eu
top=/opt/nanochat

case "${1:-}" in
collect)
    bin=$2 dir=$3
    install -D -m 755 "$bin" "$dir$top/bin/nanochat"
    install -D -m 755 deploy/image/nanochat-probe "$dir$top/bin/nanochat-probe"
    mkdir -p "$dir$top/models" "$dir$top/lib"
    cp -r models/picochat "$dir$top/models/"
    : >"$dir$top/runtime-packages"
    ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
        real=$(readlink -f "$lib")
        pkg=$( (dpkg -S "$lib" || dpkg -S "$real") 2>/dev/null | head -n 1 | cut -d: -f1)
        if [ -n "$pkg" ]; then
            echo "$pkg" >>"$dir$top/runtime-packages"
        else
            echo "stage.sh: $lib is in no package: copied" >&2
            cp "$real" "$dir$top/lib/$(basename "$lib")"
        fi
    done
    sort -u -o "$dir$top/runtime-packages" "$dir$top/runtime-packages"
    echo "stage.sh: runtime packages: $(tr '\n' ' ' <"$dir$top/runtime-packages")"
    ;;
install)
    apt-get update -q
    # ca-certificates: for downloading models by name (-m hf:...) over TLS.
    DEBIAN_FRONTEND=noninteractive xargs -a "$top/runtime-packages" \
        apt-get install -y -q --no-install-recommends ca-certificates
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
    echo "$top/lib" >/etc/ld.so.conf.d/nanochat.conf
    ldconfig
    useradd --uid 10001 --user-group --home-dir /var/cache/nanochat --no-create-home \
        --shell /usr/sbin/nologin nanochat
    install -d -o nanochat -g nanochat /var/cache/nanochat
    ;;
*)
    echo "usage: stage.sh collect BINARY DIR | install" >&2
    exit 2
    ;;
esac
