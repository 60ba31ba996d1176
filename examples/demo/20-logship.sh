# logship: tail an app's log files and ship every line, through a rotation,
# a receiver outage and a SIGTERM drain, to a small NDJSON receiver.
. examples/demo/lib.sh
set -eu
tmp=$(mktemp -d)
mkdir -p "$tmp/logs"
rport=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The receiver: appends every POSTed NDJSON body to received.ndjson.
cat >"$tmp/receiver.py" <<'EOF'
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[2], "ab") as f:
            f.write(body)
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
start_receiver() { "$PY" "$tmp/receiver.py" "$rport" "$tmp/received.ndjson" & rpid=$!; sleep 0.3; }
start_receiver
# Run python directly (not the podkit shell function) so $! is logship itself.
"$PY" -m podkit logship --path "$tmp/logs/*.log" --sink "http://127.0.0.1:$rport/ingest" \
    --state-dir "$tmp/state" --batch-max-wait 200ms --poll-interval 200ms \
    --retry-max-backoff 1s --label app=demo --log-format text 2>"$tmp/logship.log" &
pid=$!
trap 'kill $pid $rpid 2>/dev/null; rm -rf "$tmp"' EXIT
wait_ready 9411
count() { [ -f "$tmp/received.ndjson" ] && wc -l <"$tmp/received.ndjson" || echo 0; }

echo "# the app writes 1000 lines, then its log is rotated (rename) and it writes 1000 more"
for i in $(seq 1 1000); do echo "request $i served"; done >>"$tmp/logs/app.log"
mv "$tmp/logs/app.log" "$tmp/logs/app.log.1"
for i in $(seq 1001 2000); do echo "request $i served"; done >>"$tmp/logs/app.log"
sleep 1.5
echo "received: $(count) lines"
head -n 1 "$tmp/received.ndjson"; echo

echo "# the receiver goes down; the app keeps writing; logship retries with backoff"
kill $rpid; wait $rpid 2>/dev/null || true
for i in $(seq 2001 3000); do echo "request $i served"; done >>"$tmp/logs/app.log"
sleep 2
show http://127.0.0.1:9411/metrics | grep -E '^podkit_logship_(lag_bytes|retries_total|lines_total) '
echo "# the receiver is back: nothing was lost"
start_receiver
sleep 3
echo "received: $(count) lines"

echo "# SIGTERM: lines written just before it (and a last line without newline) are shipped first"
for i in $(seq 3001 3500); do echo "request $i served"; done >>"$tmp/logs/app.log"
printf 'the very last line' >>"$tmp/logs/app.log"
kill -TERM $pid; wait $pid && echo "logship stopped cleanly (exit 0)"
echo "received: $(count) lines (3501 written)"
tail -n 1 "$tmp/received.ndjson"; echo
echo "# checkpoint: $(cat "$tmp/state/checkpoints.json")"
