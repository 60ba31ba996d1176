#!/bin/sh
# Print the version the images are built, labelled and published under, and
# the commit they are built from: "VERSION COMMIT", e.g. "0.1.0 3f24c11ab2cd".
# images/build.sh and images/publish.py read it; nothing else decides a version.
#
#   VERSION  the git tag v<VERSION> on HEAD: a release. The tag must match
#            podkit/__init__.py's __version__ (the one podkit --version prints and
#            pyproject.toml takes), so a release is cut by bumping it, then
#            tagging that commit.
#            No release tag on HEAD: <that version>-dev, so a build of an
#            untagged commit never takes a release's tag.
#            $VERSION, when set, wins (a rebuild of an old release, a test).
#   COMMIT   `git rev-parse --short=12 HEAD`, with "-dirty" when the sources or
#            images/ differ from it.
set -eu
cd "$(dirname "$0")/.."
declared=$(sed -n 's/^__version__ *= *"\(.*\)"/\1/p' podkit/__init__.py | head -1)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- pyproject.toml podkit initkits sidecars adapters ambassadors images 2>/dev/null; then
    commit=$commit-dirty
fi
if [ -n "${VERSION:-}" ]; then
    version=$VERSION
elif tag=$(git describe --tags --exact-match --match 'v[0-9]*' HEAD 2>/dev/null); then
    version=${tag#v}
    if [ "$version" != "$declared" ]; then
        echo "release tag $tag does not match podkit.__version__ $declared" >&2
        exit 2
    fi
else
    version=$declared-dev
fi
echo "$version $commit"
