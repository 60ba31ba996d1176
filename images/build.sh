#!/usr/bin/env bash
# Build the podkit program images: podkit-<program>:<TAG> for each program named
# (default: all seven), from images/Dockerfile.
#
#   images/build.sh [PROGRAM ...]
#
# Environment:
#   ENGINE      podman or docker (default: docker when its daemon answers, else podman)
#   BASE_IMAGE  the image to build on. Default: localhost/podkit-base:bookworm,
#               made by images/base.sh with debootstrap when missing, so a machine
#               that reaches no container registry can build. BASE_IMAGE=python:3.12-slim
#               (the Dockerfile's own default) builds on the official image instead.
#   TAG         image tag (default: the version images/version.sh prints)
#   PYTHON      the host python whose pip makes the wheelhouse (default: .venv/bin/python)
#   WHEELHOUSE  0 to skip the wheelhouse and let pip inside the build use the index
#   JOBS        builds at a time (default 2)
#   SOURCE      the org.opencontainers.image.source label (default: the origin remote)
#
# The Python packages go in from a wheelhouse made here with `pip wheel`, so the
# builds themselves fetch nothing from a package index; only gitsync's image (git,
# openssh-client), proxy's (python3-cryptography) and a base without tini need
# Debian's mirror.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

mapfile -t all_programs < <("$here/programs.sh")  # pyproject.toml's entry points
programs=("$@")
[ ${#programs[@]} -gt 0 ] || programs=("${all_programs[@]}")

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
if [ "$ENGINE" = podman ]; then
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
fi
local_base=localhost/podkit-base:bookworm
base=${BASE_IMAGE:-$local_base}
read -r version _ < <("$here/version.sh")
tag=${TAG:-$version}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- podkit initkits sidecars adapters ambassadors images 2>/dev/null; then
    revision="$revision-dirty"
fi
# The SBOM's and podkit wheel's timestamp: the time of the last commit that
# changed podkit's package, so the same sources give the same wheel and SBOM,
# and a commit elsewhere (tests, docs, images/*.py) rebuilds no image layer:
# only the revision label, the last layer, changes.
source_date=$(git log -1 --format=%ct -- pyproject.toml README.md podkit initkits sidecars \
    adapters ambassadors 2>/dev/null || echo 0)
source_url=${SOURCE:-$(git config --get remote.origin.url 2>/dev/null || echo https://github.com/podkit/podkit)}
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3

package_dir() {  # the source directory of a program's package
    case "$1" in
        waitfor) echo initkits/waitfor ;;
        logship | gitsync | reloader | kubefiles | injector) echo "sidecars/$1" ;;
        metrics | logformat) echo "adapters/$1" ;;
        proxy) echo ambassadors/proxy ;;
        base) echo podkit ;;  # the core alone: what custom sidecars build FROM
        *) echo "unknown program: $1 (one of: ${all_programs[*]} base)" >&2; return 2 ;;
    esac
}
for p in "${programs[@]}"; do
    dir=$(package_dir "$p")
    [ -f "$dir/__init__.py" ] || { echo "$p is not written yet: $dir/__init__.py is missing" >&2; exit 2; }
done

if [ "$base" = "$local_base" ]; then
    "$here/base.sh" "$base"
fi

# The build context: only what the Dockerfile copies (the repository root would
# drag .venv and .git along), with the wheelhouse under images/.
# The Dockerfile with the version and revision written into its LABEL lines:
# buildah 1.28's layer cache keys a LABEL step on its text with ${ARG}s
# unexpanded, so a new commit reused the previous build's label (an image
# published as commit B carried commit A's revision). Outside the context, so
# it busts no COPY layer.
dockerfile=$(mktemp "${TMPDIR:-/tmp}/podkit-dockerfile.XXXXXX")
trap 'rm -f "$dockerfile"' EXIT
sed -e "s|\${VERSION}|$version|g" -e "s|\${REVISION}|$revision|g" \
    "$here/Dockerfile" >"$dockerfile"
ctx=$here/.build/context
rm -rf "$ctx"
mkdir -p "$ctx/images"
cp pyproject.toml README.md "$ctx/"
for d in podkit initkits sidecars adapters ambassadors; do
    cp -r "$d" "$ctx/$d"
done
find "$ctx" -name __pycache__ -type d -prune -exec rm -rf {} +
cp "$here/Dockerfile" "$here/apt-install.sh" "$here/slim.sh" "$here/debian-py.sh" \
    "$here/sbom-debian.py" "$ctx/images/"

if [ "${WHEELHOUSE:-1}" != 0 ]; then
    # Wheels must match the base's Python: same version as the host, build them
    # here; another version, download binary wheels for it.
    base_py=$($ENGINE run --rm --entrypoint python3 "$base" -c \
        'import sys, platform; print(f"{sys.version_info[0]}.{sys.version_info[1]} {platform.machine()}")')
    host_py=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    wh=$ctx/images/wheelhouse
    # podkit's wheel from a fresh copy of the sources: an in-tree build would
    # reuse ./build/lib, where files deleted from the tree live on.
    src=$here/.build/src
    rm -rf "$src"
    mkdir -p "$src"
    cp -r "$ctx"/pyproject.toml "$ctx"/README.md "$ctx"/podkit "$ctx"/initkits "$ctx"/sidecars \
        "$ctx"/adapters "$ctx"/ambassadors "$src/"
    # SOURCE_DATE_EPOCH: the wheel's file times are the commit's, not the
    # copy's, so an unchanged tree gives a byte-identical wheelhouse and the
    # Dockerfile's `COPY images` (and every layer after it) comes from cache.
    SOURCE_DATE_EPOCH=$source_date "$python" -m pip wheel --quiet --disable-pip-version-check \
        --no-deps -w "$wh" "$src"
    # pip itself, run from its wheel inside the build (see the Dockerfile).
    "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --no-deps -d "$wh" pip
    podkit_wheel=$(ls "$wh"/podkit-*.whl)
    # The SBOM generator the Dockerfile runs at build time (never in an image).
    sbom_tool=$(sed -n 's/^ARG SBOM_TOOL=//p' "$here/Dockerfile")
    if [ "${base_py% *}" = "$host_py" ]; then
        "$python" -m pip wheel --quiet --disable-pip-version-check -w "$wh" "$podkit_wheel[all]" "$sbom_tool"
    else
        arch=${base_py#* }
        "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
            --python-version "${base_py% *}" --platform "manylinux_2_28_$arch" \
            --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
            -d "$wh" "$podkit_wheel[all]" "$sbom_tool"
    fi
    # The proxy's request path compiled by mypyc (tools/compile.py), when the
    # base's Python is the host's: the Dockerfile puts the extension modules
    # beside the installed sources, which they are built from. Kept between
    # builds (the same sources reuse it), so the context, and the layers after
    # `COPY images`, stay the same. Another Python runs the source as it is.
    if [ "${base_py% *}" = "$host_py" ] && [[ " ${programs[*]} " == *" proxy "* ]]; then
        "$python" tools/compile.py --out "$here/.build/compiled" >/dev/null
        cp -a "$here/.build/compiled" "$ctx/images/compiled"
    fi
fi

# The environment an image sets (admin address, state directory), declared
# once in podkit.validate.image_env, which `podkit validate` reads too.
image_env() {  # PROGRAM VARIABLE
    "$python" - "$1" "$2" <<'PY'
import sys
from podkit.cli import programs
from podkit.validate import image_env
print(image_env(programs()[sys.argv[1]].load())[sys.argv[2]])
PY
}

# Two builds at a time: a build waits on layer commits as much as on the CPU.
jobs=${JOBS:-2}
logs=$here/.build/logs
mkdir -p "$logs"
build_one() {
    local p=$1 start
    start=$(date +%s)
    local target=(--target image)  # base: a custom sidecar's class chooses its admin address
    if [ "$p" != base ]; then
        target=(--target program
            --build-arg ADMIN_ADDR="$(image_env "$p" PODKIT_ADMIN_ADDR)"
            --build-arg STATE_DIR="$(image_env "$p" PODKIT_STATE_DIR)")
    fi
    if $ENGINE build -f "$dockerfile" "${target[@]}" \
        --build-arg BASE_IMAGE="$base" --build-arg PROGRAM="$p" \
        --build-arg VERSION="$version" --build-arg REVISION="$revision" \
        --build-arg SOURCE="$source_url" --build-arg SOURCE_DATE_EPOCH="$source_date" \
        -t "podkit-$p:$tag" "$ctx" >"$logs/$p.log" 2>&1; then
        echo "built podkit-$p:$tag in $(($(date +%s) - start))s"
    else
        echo "FAILED podkit-$p:$tag (log: $logs/$p.log)" >&2
        tail -20 "$logs/$p.log" >&2
        return 1
    fi
}
echo "building ${programs[*]} on $base with $ENGINE, $jobs at a time"
failed=0
running=0
for p in "${programs[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
    build_one "$p" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done
exit "$failed"
