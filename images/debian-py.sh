#!/bin/sh
# debian-py.sh VENV: copy what Debian's python3-* packages installed in
# /usr/lib/python3/dist-packages (empty on the base; the Dockerfile's venv stage
# installs python3-cryptography for the proxy) into VENV's site-packages before
# pip runs, so pip counts those packages as installed and does not fetch PyPI's
# wheels of them. Module directories, shared objects and .dist-info are copied;
# .egg-info is not (one metadata directory per package, or pip and the SBOM
# would see the package twice).
#
# It writes STATUS (default /opt/debian-py.status; empty when nothing was
# copied): one `PACKAGE VERSION ARCH SOURCE` line per Debian package copied,
# which images/sbom-debian.py adds to the image's SBOM.
set -eu
venv=$1
status=${2:-/opt/debian-py.status}
: >"$status"
dist=/usr/lib/python3/dist-packages
[ -d "$dist" ] || exit 0
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for path in "$dist"/*; do
    [ -e "$path" ] || continue
    case "$path" in *.egg-info) continue ;; esac
    cp -a "$path" "$site/"
    echo "from Debian's packages: $path" >&2
    owner=$(dpkg -S "$path" | cut -d: -f1)
    dpkg-query -W -f '${Package} ${Version} ${Architecture} ${source:Package}\n' "$owner" >>"$status"
done
