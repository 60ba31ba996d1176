# kubefiles: labelled ConfigMaps and Secrets written to a folder, against the
# FAKE Kubernetes API of tests/peers/kubeapi.py (no API server runs here; the
# fake speaks list/watch with resourceVersions, bookmarks and 410s, and takes
# create/replace/delete the way kubectl sends them).
. examples/demo/lib.sh
set -eu
tmp=$(mktemp -d)
api_port=19417
api="http://127.0.0.1:$api_port/api/v1/namespaces/default"
pids=""
trap 'kill $pids 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT

# What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount.
mkdir "$tmp/sa" "$tmp/dashboards"
echo demo-token > "$tmp/sa/token"
echo default > "$tmp/sa/namespace"
kube() {  # kube METHOD PATH [JSON]: what kubectl would send
    curl -sS -o /dev/null -X "$1" -H "Authorization: Bearer demo-token" \
        -H "Content-Type: application/json" ${3:+--data "$3"} "$api/$2"
}
dashboard() {  # dashboard NAME TITLE [LABEL_VALUE]
    echo "{\"metadata\": {\"name\": \"$1\", \"labels\": {\"grafana_dashboard\": \"${3:-1}\"}},
           \"data\": {\"$1.json\": \"{\\\"title\\\": \\\"$2\\\"}\"}}"
}
listing() { echo "    folder: $(cd "$tmp/dashboards" && find . -type f ! -name '.kubefiles-manifest.json' | sort | tr '\n' ' ')"; }

"$PY" -m tests.peers.kubeapi $api_port demo-token >"$tmp/api.log" 2>&1 &
pids="$pids $!"
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$api_port/" && break; sleep 0.1; done
kube POST configmaps "$(dashboard nodes 'Node exporter')"
kube POST configmaps "$(dashboard unrelated 'Not for Grafana' 0)"

"$PY" -m podkit kubefiles --server "http://127.0.0.1:$api_port" --service-account-dir "$tmp/sa" \
    --label grafana_dashboard=1 --folder "$tmp/dashboards" --resource both \
    --log-format text 2>"$tmp/kubefiles.log" &
pids="$pids $!"
wait_ready 9417
echo "kubefiles lists, then watches configmaps and secrets labelled grafana_dashboard=1"
listing
echo "--- 1. a dashboard is created, another changed: on disk within milliseconds"
kube POST configmaps "$(dashboard redis 'Redis')"
kube PUT configmaps/nodes "$(dashboard nodes 'Node exporter v2')"
sleep 0.3; listing; echo "    nodes.json: $(cat "$tmp/dashboards/nodes.json")"
echo "--- 2. a file someone else put there is never touched; a deleted dashboard goes"
echo '{"title": "hand-made"}' > "$tmp/dashboards/mine.json"
kube DELETE configmaps/redis
sleep 0.3; listing
echo "--- 3. a Secret's values are base64-decoded; an unsafe key is refused and reported"
kube POST secrets '{"metadata": {"name": "ds", "labels": {"grafana_dashboard": "1"}},
    "data": {"datasource.yaml": "'"$(printf 'url: http://prometheus:9090' | base64)"'", "..": "eA=="}}'
sleep 0.3; listing
show -s http://127.0.0.1:9417/ | grep -A3 '"refused"' | head -5
echo "--- status: per namespace, freshness, and the metrics"
show -s http://127.0.0.1:9417/ | grep -E '"(state|objects|last_fresh|lists)"' | head -8
show -s http://127.0.0.1:9417/healthz
show -s http://127.0.0.1:9417/metrics | grep -E '^podkit_kubefiles_(lists|watch_events|files_written|files_removed|refused)' || true
