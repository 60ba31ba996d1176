#!/bin/sh
# apt-install.sh [--without "PATTERN ..."] PACKAGE...
# Used by the Dockerfile through a bind mount, so it never lands in an image.
# Installs the packages without recommends and keeps nothing else: no apt lists
# or downloaded .debs, no docs, man pages or translations. --without removes
# packages the ones asked for depend on but that podkit never uses (perl for
# git), ignoring the dependency: they are most of git's weight in an image.
set -eu
without=""
if [ "${1:-}" = --without ]; then without=$2; shift 2; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
if [ -n "$without" ]; then
    # Patterns (perl-modules-*) so the list survives Debian's next perl version.
    # shellcheck disable=SC2086
    drop=$(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' $without 2>/dev/null |
           awk '$1 == "ii" { print $2 }')
    # shellcheck disable=SC2086
    [ -z "$drop" ] || dpkg --purge --force-depends $drop >/dev/null 2>&1
fi
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
       /var/cache/debconf/*-old /usr/share/doc/* /usr/share/man/* /usr/share/info/*
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
