# reloader: a ConfigMap-style volume updated the kubelet's way (new timestamped
# directory, ..data_tmp renamed over ..data), a webhook receiver on loopback.
. examples/demo/lib.sh
set -eu
tmp=$(mktemp -d)
conf="$tmp/conf"
mkdir "$conf"
hook_port=19413
pids=""
trap 'kill $pids 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT

# The kubelet's atomic writer, step by step.
update() {  # update CONTENT
    ts=$(mktemp -d "$conf/..$(date -u +%Y_%m_%d_%H_%M_%S).XXXXXX")
    printf '%s\n' "$1" > "$ts/app.yml"
    old=$(readlink "$conf/..data" || true)
    ln -s "$(basename "$ts")" "$conf/..data_tmp"
    mv -T "$conf/..data_tmp" "$conf/..data"
    [ -L "$conf/app.yml" ] || ln -s ..data/app.yml "$conf/app.yml"
    if [ -n "$old" ]; then rm -rf "${conf:?}/$old"; fi
}

# A tiny app with a reload endpoint (stands in for Prometheus' /-/reload).
start_app() {
    "$PY" -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        print(f"    app: reload requested ({self.command} {self.path})", flush=True)
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' $hook_port &
    app=$!
    pids="$pids $app"
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$hook_port/" && break; sleep 0.1; done
}

update "scrape_interval: 15s"
start_app
"$PY" -m podkit reloader --watch "$conf" --webhook-url "http://127.0.0.1:$hook_port/-/reload" \
    --debounce 300ms --retry-max-backoff 1s --log-format text 2>"$tmp/reloader.log" &
pids="$pids $!"
wait_ready 9413
echo "reloader is watching $conf (files: $(ls -A "$conf" | tr '\n' ' '))"

echo "--- 1. the ConfigMap changes: one reload"
update "scrape_interval: 30s"; sleep 1
echo "--- 2. the kubelet rewrites identical content (new ..data target): no reload"
update "scrape_interval: 30s"; sleep 1
echo "--- 3. ten updates in a burst: one reload, for the last"
for i in $(seq 1 10); do update "scrape_interval: ${i}m"; done; sleep 1
echo "--- 4. the app is down when the config changes: the reload is retried"
kill $app; wait $app 2>/dev/null || true
update "scrape_interval: 1h"; sleep 1.5
show -s http://127.0.0.1:9413/ | grep -E '"(result|pending|error)"' || true
start_app
sleep 2.5
echo "--- status and metrics"
show http://127.0.0.1:9413/ | grep -E '"(current_hash|last_success_hash|result|retry)"'
show http://127.0.0.1:9413/metrics | grep -E '^podkit_reloader_(reloads_total|last_reload_successful|resyncs)' || true
echo "--- reloader's log"
grep -E 'change detected|reloaded|will retry' "$tmp/reloader.log" | cut -c1-160
