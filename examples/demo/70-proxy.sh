# proxy: an ambassador in front of two upstreams: balancing, failover, hardening, metrics.
. examples/demo/lib.sh
set -eu
tmp=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
a=$(port); b=$(port); listen=$(port)
mkdir -p "$tmp/a" "$tmp/b"
echo "hello from upstream A" > "$tmp/a/who"
echo "hello from upstream B" > "$tmp/b/who"
"$PY" -m http.server "$a" --bind 127.0.0.1 --directory "$tmp/a" >/dev/null 2>&1 &
apid=$!; pids="$pids $apid"
"$PY" -m http.server "$b" --bind 127.0.0.1 --directory "$tmp/b" >/dev/null 2>&1 &
bpid=$!; pids="$pids $bpid"
echo "$ podkit proxy --listen 127.0.0.1:$listen --upstream http://127.0.0.1:$a --upstream http://127.0.0.1:$b \\
    --health-path /who --health-interval 500ms --eject-after 2"
"$PY" -m podkit proxy --listen "127.0.0.1:$listen" \
    --upstream "http://127.0.0.1:$a" --upstream "http://127.0.0.1:$b" \
    --health-path /who --health-interval 500ms --eject-after 2 2>"$tmp/proxy.log" &
ppid=$!; pids="$pids $ppid"
wait_ready 9416

echo; echo "# round robin over both"
for _ in 1 2 3 4; do curl -sS "http://127.0.0.1:$listen/who"; done
echo "# one access-log line per request:"
sleep 0.2; grep '"message": "request"' "$tmp/proxy.log" | tail -1

echo; echo "# upstream B dies: retries and ejection hide it from the app"
kill $bpid; wait $bpid 2>/dev/null || true
for _ in 1 2 3 4; do curl -sS "http://127.0.0.1:$listen/who"; done
sleep 0.7
curl -sS http://127.0.0.1:9416/ | "$PY" -c '
import json, sys
for u in json.load(sys.stdin)["listeners"][0]["upstreams"]:
    print("  {upstream}: healthy={healthy} ejected={ejected} requests={requests} failures={failures}".format(**u))'

echo; echo "# request smuggling (Content-Length + Transfer-Encoding) is refused before any upstream sees it"
"$PY" - "$listen" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"POST /who HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG")
out = b""
while chunk := s.recv(4096):
    out += chunk
print("  " + "\n  ".join(out.decode().splitlines()))
PY

echo; echo "# both gone: 503 with the reason in a header and one line of body"
kill $apid; wait $apid 2>/dev/null || true
sleep 1.2
curl -sS -i "http://127.0.0.1:$listen/who" | grep -E '^HTTP|^x-podkit-proxy|^no healthy'

echo; show http://127.0.0.1:9416/metrics | grep -E '^podkit_proxy_(requests_total|upstream_healthy|retries_total|ejections_total)'

kill -TERM $ppid; wait $ppid && echo "stopped cleanly (exit 0)"
