#!/bin/sh
# slim.sh OUT: copy into OUT only what a podkit program needs at run time,
# to be the whole root filesystem of its image (`FROM scratch`).
#
# Run by the Dockerfile in a build stage that has the full base, the program's
# venv in /opt/podkit and its system packages (git and ssh for gitsync):
#
#   python and its standard library, less what podkit never imports (tests,
#     IDLE, tkinter, lib2to3, ensurepip, distutils, sqlite3, curses, dbm, nis,
#     readline, ...), and the bytecode of what was removed;
#   the venv; tini; dash as /bin/sh (what `podman exec` debugging and git's
#     own shell-outs need; no coreutils, no apt, no dpkg, no perl);
#   git, its helpers and ssh when they are installed (gitsync);
#   every shared library those need (the ldd closure of what is left) and
#     the loader, debug symbols stripped when the builder has `strip`;
#   CA certificates, time zones, passwd/group, nsswitch, OpenSSL's config,
#     ldconfig and its cache (ctypes.util.find_library asks it).
#
# Files go through tar streams, so hard links (git's helpers are one binary
# under many names) stay hard links; paths are resolved through the merged
# /usr, whose top-level links (/lib, /bin, ...) are kept as links.
set -eu
out=$1
mkdir -p "$out"

# copy PATH...: each path (a tree is copied whole) into OUT, with any
# directory part resolved (/lib/x/libc.so.6 -> /usr/lib/x/libc.so.6) and, for
# a link, what it points to as well.
copy() {
    for f; do
        [ -e "$f" ] || continue
        d=$(readlink -f "$(dirname "$f")")
        printf '%s\n%s\n' "$d/$(basename "$f")" "$(readlink -f "$f")"
    done | sort -u | tar -C / -cf - --files-from=- 2>/dev/null | tar -C "$out" -xf -
}

for top in /bin /sbin /lib /lib64 /lib32 /libx32; do
    [ -L "$top" ] && tar -C / -cf - "${top#/}" | tar -C "$out" -xf -
done
stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
copy "$(command -v python3)" "$stdlib" /opt/podkit /usr/bin/tini /usr/bin/dash /sbin/ldconfig \
    /etc/passwd /etc/group /etc/nsswitch.conf /etc/ld.so.cache /etc/ld.so.conf \
    /etc/ssl/openssl.cnf /etc/ssl/certs/ca-certificates.crt /usr/lib/ssl
# Time zones (--timezone Europe/Berlin); right/ and posix/ are the same zones
# under other rules, which nothing here reads.
# shellcheck disable=SC2046
copy $(find /usr/share/zoneinfo -mindepth 1 -maxdepth 1 ! -name right ! -name posix)
# OpenSSL's legacy provider, which Debian's cryptography (the proxy's, see the
# Dockerfile) loads at import and fails without (125 kB); only with it.
if ls -d /opt/podkit/lib/python3*/site-packages/cryptography >/dev/null 2>&1; then
    copy /usr/lib/*/ossl-modules
fi
if command -v git >/dev/null; then
    copy "$(command -v git)" "$(command -v ssh)" /usr/lib/git-core /usr/share/git-core
fi
ln -sf dash "$out/usr/bin/sh"
if [ -d "$out/usr/lib/git-core" ]; then
    # gitsync fetches (git://, http(s), ssh), checks out and gc's: git's mail,
    # push-over-http, server and scalar programs are never run.
    rm -f "$out"/usr/lib/git-core/git-imap-send "$out"/usr/lib/git-core/git-http-push \
        "$out"/usr/lib/git-core/git-http-backend "$out"/usr/lib/git-core/git-daemon \
        "$out"/usr/lib/git-core/git-shell "$out"/usr/lib/git-core/scalar \
        "$out"/usr/lib/git-core/git-http-fetch
    # One git binary, not two copies of it.
    if cmp -s "$out/usr/bin/git" "$out/usr/lib/git-core/git"; then
        ln -sf ../lib/git-core/git "$out/usr/bin/git"
    fi
fi

# What podkit never imports: tests, IDLE and Tk, 2to3, pip's bootstrap,
# distutils, sqlite3, curses, dbm, nis, readline, crypt, the build
# configuration, Debian's dist-packages and any other Python's site-packages
# (the venv has its own). Their shared libraries then stay out too.
# And what neither podkit nor any of its dependencies imports (checked with a
# grep of every runtime dependency, and in the image by tests/e2e/test_images.py
# importing every module of the venv): unittest and doctest (test tools; only
# aiohttp's test_utils, never imported at run time, wants unittest), pydoc and
# pdb (interactive help and the debugger: `help()` and `breakpoint()` do not
# work in an image), xml and pyexpat, xmlrpc, multiprocessing (only
# ProcessPoolExecutor needs it), mailbox, imaplib, nntplib, pickletools,
# _pyio and _pydecimal (pure-Python fallbacks of io and decimal, whose C
# versions are there), audio modules and _xxsubinterpreters. About 4 MB.
(
    cd "$out$stdlib"
    rm -rf test idlelib tkinter turtledemo turtle.py ensurepip lib2to3 pydoc_data distutils \
        sqlite3 curses dbm venv config-* site-packages dist-packages \
        unittest doctest.py pydoc.py pdb.py xml xmlrpc multiprocessing mailbox.py imaplib.py \
        nntplib.py pickletools.py _pyio.py _pydecimal.py
    cd lib-dynload
    rm -f _sqlite3.* _tkinter.* _curses*.* _dbm.* _gdbm.* nis.* readline.* _crypt.* \
        _test*.* xxlimited*.* _ctypes_test.* _xxtestfuzz.* xxsubtype.* \
        pyexpat.* _elementtree.* audioop.* ossaudiodev.* _xxsubinterpreters.* _multiprocessing.* \
        _posixshmem.*
)
find "$out$stdlib" -name '*.pyc' | while read -r pyc; do
    src=$(basename "$pyc" | sed 's/\.cpython-[0-9]*\(\.opt-[12]\)\{0,1\}\.pyc$/.py/')
    [ -e "$(dirname "$pyc")/../$src" ] || rm -f "$pyc"
done
find "$out" -name '*.opt-[12].pyc' -delete

# The shared-library closure of the ELF files that are left.
find "$out" -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \) | while read -r f; do
    ldd "$f" 2>/dev/null || true
done | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
    while read -r lib; do copy "$lib"; done
if command -v strip >/dev/null; then
    find "$out" -type f \( -name '*.so' -o -name '*.so.*' \) -exec strip --strip-unneeded {} + \
        2>/dev/null || true
fi
mkdir -p "$out/tmp" "$out/proc" "$out/sys" "$out/dev" "$out/etc"
chmod 1777 "$out/tmp"
