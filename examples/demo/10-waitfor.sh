# waitfor: wait for a TCP port, an HTTP endpoint and a file that appear late, then exec the app.
. examples/demo/lib.sh
set -eu
tmp=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
web=$(port)

echo "# the web server and the file appear only after 1-2 s"
(sleep 1.5; exec "$PY" -m http.server "$web" --bind 127.0.0.1 --directory "$tmp" >/dev/null 2>&1) &
pids="$pids $!"
(sleep 1; echo '{"ready": true}' > "$tmp/config.json") &
pids="$pids $!"

echo "\$ podkit waitfor tcp://127.0.0.1:$web http://127.0.0.1:$web/config.json \\
    file://$tmp/config.json?nonempty=1 --http-body-regex '\"ready\": true' -- sh -c '... exit 3'"
set +e
podkit waitfor --log-format text "tcp://127.0.0.1:$web" "http://127.0.0.1:$web/config.json" \
    "file://$tmp/config.json?nonempty=1" --http-body-regex '"ready": true' \
    -- sh -c 'echo "app started (pid $$), exits 3"; exit 3' 2>&1 | grep -v '"settings"\|starting  settings'
echo "exit code: ${PIPESTATUS[0]} (the app's own)"

echo
echo "# a dependency that never comes: exit 124 with the reason; the app is not run"
echo "\$ podkit waitfor --timeout 1s tcp://... postgres://app:hunter2-secret@... -- echo never printed"
podkit waitfor --log-format text --timeout 1s "tcp://127.0.0.1:$(port)" \
    "postgres://app:hunter2-secret@127.0.0.1:$(port)/app" -- echo "never printed" 2>&1 | grep -v 'settings='
echo "exit code: ${PIPESTATUS[0]}"

echo
echo "# malformed targets: exit 2 before any waiting"
echo "\$ podkit waitfor tcp://db ftp://x:21 tcp://::1:80"
podkit waitfor tcp://db 'ftp://x:21' 'tcp://::1:80' 2>&1
echo "exit code: $?"

echo
echo "# metrics while waiting (--admin-addr 127.0.0.1:9410), then SIGTERM: exit 143"
"$PY" -m podkit waitfor --admin-addr 127.0.0.1:9410 "tcp://127.0.0.1:$(port)" 2>/dev/null &
wpid=$!
pids="$pids $wpid"
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:9410/healthz >/dev/null 2>&1 && break; sleep 0.1; done
show http://127.0.0.1:9410/metrics | grep '^podkit_waitfor'
kill -TERM $wpid
wait $wpid
echo "exit code: $?"
