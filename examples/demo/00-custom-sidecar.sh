# The example sidecar of examples/custom_sidecar.py with its admin server.
. examples/demo/lib.sh
set -eu
tmp=$(mktemp -d)
"$PY" examples/custom_sidecar.py --admin-addr 127.0.0.1:9400 --log-format text \
    --path "$tmp/beat" --every 1s &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
wait_ready 9400
show http://127.0.0.1:9400/healthz
show http://127.0.0.1:9400/readyz
show http://127.0.0.1:9400/
show http://127.0.0.1:9400/metrics | grep -E '^podkit_' || true
kill -TERM $pid; wait $pid && echo "stopped cleanly (exit 0)"
