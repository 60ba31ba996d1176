# Shared by the demo parts: the venv's commands first on PATH, and a pretty request.
# (`podkit` is the venv's console script, a real process: `podkit ... &` then
# `kill $!` stops the program itself, not a shell function's subshell.)
PY=${PY:-.venv/bin/python}
PATH="$(cd "$(dirname "$PY")" && pwd):$PATH"
export PATH
show() { echo "\$ curl $*"; curl -sS --max-time 5 "$@"; echo; }
wait_ready() {  # wait_ready PORT
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "not ready on port $1" >&2
    return 1
}
