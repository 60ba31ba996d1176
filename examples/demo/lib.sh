# Shared by the demo parts: a podkit command from the venv, and a pretty request.
PY=${PY:-.venv/bin/python}
podkit() { "$PY" -m podkit "$@"; }
show() { echo "\$ curl $*"; curl -sS --max-time 5 "$@"; echo; }
wait_ready() {  # wait_ready PORT
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "not ready on port $1" >&2
    return 1
}
