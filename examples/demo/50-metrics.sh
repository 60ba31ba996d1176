# metrics: an app's JSON stats, StatsD packets and log lines in, one Prometheus /metrics out.
. examples/demo/lib.sh
set -eu
tmp=$(mktemp -d)
pids=""
trap 'kill $pids 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
app=$(port)
statsd=$(port)

# The "app": a JSON stats endpoint (python's http.server) ...
cat > "$tmp/stats" <<'EOF'
{"version": "2.1", "queues": [{"name": "mail", "depth": 3}, {"name": "sms", "depth": 11}],
 "components": {"db": "UP", "cache": "DEGRADED", "search": "DOWN"}}
EOF
"$PY" -m http.server "$app" --bind 127.0.0.1 --directory "$tmp" >/dev/null 2>&1 &
pids="$pids $!"
# ... and a log file.
mkdir "$tmp/logs"
printf 'status=200 dur_ms=12\nstatus=200 dur_ms=40\nstatus=500 dur_ms=700\n' > "$tmp/logs/app.log"

# statsd_exporter's README mapping, brought as is.
cat > "$tmp/statsd-mapping.yaml" <<'EOF'
mappings:
- match: "test.dispatcher.*.*.*"
  name: "dispatcher_events_total"
  labels: {processor: "$1", action: "$2", outcome: "$3", job: "test_dispatcher"}
- match: "*.signup.*.*"
  name: "signup_events_total"
  labels: {provider: "$2", outcome: "$3", job: "${1}_server"}
EOF

cat > "$tmp/adapter.yaml" <<EOF
sources:
  - type: json
    name: app
    url: http://127.0.0.1:$app/stats
    metrics:
      - name: app_queue_depth
        path: \$.queues[*].depth
        labels: {queue: "\$.queues[*].name"}
        help: Messages waiting per queue.
      - name: app_component_up
        path: \$.components
        each: key
        labels: {component: "{key}"}
        value_map: {UP: 1, DEGRADED: 0.5, DOWN: 0}
  - type: statsd
    udp: 127.0.0.1:$statsd
    tcp: 127.0.0.1:$statsd
    mapping_file: statsd-mapping.yaml
  - type: log
    path: $tmp/logs/*.log
    rules:
      - match: 'status=(?P<status>\d{3}) dur_ms=(?P<dur_ms>\d+)'
        counter: app_requests_total
        labels: [status]
      - match: 'dur_ms=(?P<dur_ms>\d+)'
        histogram: app_request_duration_seconds
        value: dur_ms
        scale: 0.001
        buckets: [0.05, 0.5, 1]
EOF
echo "\$ podkit metrics --config adapter.yaml     (json + statsd + log sources)"
"$PY" -m podkit metrics --config "$tmp/adapter.yaml" --log-format text 2>"$tmp/metrics.log" &
pids="$pids $!"
mpid=$!
wait_ready 9414

echo "# StatsD over UDP (DogStatsD tags, a sampled counter, a set) and TCP; one line conflicts"
"$PY" - "$statsd" <<'EOF'
import socket, sys
port = int(sys.argv[1])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"test.dispatcher.FooProcessor.send.success:1|c|@0.5\n"
         b"checkout.latency:250|ms|#region:eu\n"
         b"users.online:alice|s\nusers.online:bob|s\nusers.online:alice|s\n"
         b"checkout.latency:1|c\n"          # same name, another type: dropped and counted
         b"this is not statsd\n", ("127.0.0.1", port))
t = socket.create_connection(("127.0.0.1", port))
t.sendall(b"foo_product.signup.facebook.failure:1|c\n"); t.close()
EOF
sleep 0.5
echo "status=404 dur_ms=3" >> "$tmp/logs/app.log"
sleep 1.5

echo "\$ curl -s http://127.0.0.1:9414/metrics | grep -v '^#' | grep -v '^process_\|^podkit_build'"
curl -s http://127.0.0.1:9414/metrics | grep -v '^#' | grep -v '^process_\|^podkit_build\|} 0.0$'
echo
echo "# the same endpoint as OpenMetrics (what Prometheus asks for)"
curl -s -H 'Accept: application/openmetrics-text; version=1.0.0' http://127.0.0.1:9414/metrics | grep -A3 'TYPE app_component_up'
echo
echo "# the conflict was logged once:"
grep 'conflict' "$tmp/metrics.log" || true
echo
echo "# the app's stats endpoint goes away: the scrape still works, source_up says 0"
rm "$tmp/stats"
curl -s http://127.0.0.1:9414/metrics | grep -E '^podkit_metrics_(source_up|json_errors_total\{reason="http_status")'
kill -TERM $mpid; wait $mpid && echo "stopped cleanly (exit 0)"
