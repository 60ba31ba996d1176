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

if [ "${FORCE:-0}" != 1 ] && podman image exists "$name"; then
    echo "base image $name exists (FORCE=1 rebuilds)"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 1; }

dir=$(mktemp -d /var/tmp/podkit-base.XXXXXX)
trap 'rm -rf "$dir"' EXIT
# python3-venv: the program images build their virtualenv with the base's python.
# tini: PID 1 of every program image (python:3.12-slim gets it from apt instead).
# ca-certificates: for https peers. Everything else comes with minbase.
debootstrap --variant=minbase --include=python3,python3-venv,tini,ca-certificates \
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
