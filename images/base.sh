#!/usr/bin/env bash
# Build the local base image without any container registry: a minimal Debian
# bookworm made by debootstrap from Debian's mirror, imported with podman.
# Cached by tag: does nothing when the image already exists (FORCE=1 rebuilds).
#
#   images/base.sh [NAME]      default NAME: localhost/podkit-base:bookworm
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
name=${1:-${PODKIT_BASE_IMAGE:-localhost/podkit-base:bookworm}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

pause=${PODKIT_PAUSE_IMAGE:-localhost/podkit-pause:bookworm}

# The pod infra image that images/containers.conf names (infra_image): podman
# 4.3 would pull k8s.gcr.io/pause or build one from catatonit, neither of
# which exists here. A shell loop that exits on SIGTERM is all a pause needs.
build_pause() {
    if [ "${FORCE:-0}" = 1 ] || ! podman image exists "$pause"; then
        local ctx
        ctx=$(mktemp -d)
        printf '#!/bin/sh\ntrap "exit 0" TERM INT\nwhile :; do sleep 86400 & wait $!; done\n' >"$ctx/pause"
        chmod 755 "$ctx/pause"
        printf 'FROM %s\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' "$name" >"$ctx/Containerfile"
        podman build --quiet -t "$pause" "$ctx" >/dev/null
        rm -rf "$ctx"
        echo "built pause image $pause"
    fi
}

# A base made before images/slim.sh strips with binutils is made again.
if [ "${FORCE:-0}" != 1 ] && podman image exists "$name" &&
    podman run --rm --network none --entrypoint /bin/sh "$name" -c 'command -v strip' >/dev/null; then
    echo "base image $name exists (FORCE=1 rebuilds)"
    build_pause
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 1; }

dir=$(mktemp -d /var/tmp/podkit-base.XXXXXX)
trap 'rm -rf "$dir"' EXIT
# python3-venv: the program images build their virtualenv with the base's python.
# tini: PID 1 of every program image (python:3.12-slim gets it from apt instead).
# ca-certificates: for https peers. binutils: images/slim.sh strips the
# shared objects it copies into a program's image (it never lands there).
# Everything else comes with minbase.
debootstrap --variant=minbase --include=python3,python3-venv,tini,ca-certificates,binutils \
    bookworm "$dir" "$mirror"
# Leave only what an image needs: no apt lists or caches, no docs, no man pages.
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
       "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
       "$dir"/var/log/* "$dir"/dev/*
# The import keeps no runtime config from the tarball: set what a Dockerfile needs.
tar -C "$dir" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$name"
echo "built base image $name"
build_pause
