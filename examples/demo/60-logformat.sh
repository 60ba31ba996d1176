# logformat: an app's own log format in, one JSON object per record out.
. examples/demo/lib.sh
set -eu
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT

echo "--- nginx access lines on stdin (one does not parse: it passes through, marked)"
printf '%s\n' \
  '::1 - - [26/Nov/2026:06:40:01 +0000] "GET /index.html HTTP/1.1" 200 612 "-" "curl/7.88.1"' \
  '203.0.113.7 - alice [26/Nov/2026:07:40:02 +0100] "POST /api?q=\x22x\x22 HTTP/1.1" 502 0 "https://example.com/" "Mozilla/5.0"' \
  'not an access log line' \
  | podkit logformat --stdin --format nginx --admin-addr off --log-level warning

echo; echo "--- syslog, RFC 5424 and RFC 3164 told apart per line; klog; logfmt"
printf '%s\n' \
  '<165>1 2003-10-11T22:14:15.003Z host evntslog - ID47 [ex@32473 iut="3"] An application event' \
  "<34>Oct 11 22:14:15 mymachine su[42]: 'su root' failed for lonvick" \
  | podkit logformat --stdin --format syslog --admin-addr off --log-level warning
echo 'I1025 00:15:15.525108       1 controller_utils.go:116] "Pod status updated" pod="kube-system/kubedns" status="ready"' \
  | podkit logformat --stdin --format klog --admin-addr off --log-level warning
echo 'time=2024-01-02T03:04:05.5+01:00 level=warn msg="slow query" durationMs=1250 userID=7' \
  | podkit logformat --stdin --format logfmt --admin-addr off --log-level warning

echo; echo "--- an endless stream into '| head -2': the closed pipe stops the adapter (exit 1), no retry loop"
yes 'level=info msg="tick"' \
  | podkit logformat --stdin --format logfmt --admin-addr off --log-format text 2>"$tmp/err" \
  | head -2 || true
echo "adapter exit code: ${PIPESTATUS[1]}; its log: $(grep -o 'output closed.*' "$tmp/err")"

echo; echo "--- as a sidecar: follow a Python app's log file, tracebacks joined into one record"
cat > "$tmp/app.py" <<'PY'
import logging, sys
logging.basicConfig(filename=sys.argv[1], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("shop.checkout")
log.warning("cart %s is slow", 42)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("checkout failed")
PY
TZ=UTC "$PY" "$tmp/app.py" "$tmp/app.log"
"$PY" -m podkit logformat --admin-addr 127.0.0.1:9415 --log-format text --log-level warning \
  --path "$tmp/app.log" --state-dir "$tmp/state" \
  --format 'regex:^(?P<time>\S+ \S+) (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)' \
  --time-format '%Y-%m-%d %H:%M:%S,%f' --multiline-start '^\d{4}-\d\d-\d\d ' \
  --multiline-timeout 500ms &
pid=$!
wait_ready 9415
sleep 1
show http://127.0.0.1:9415/metrics | grep -E '^podkit_logformat_' | grep -v _created || true
kill -TERM $pid; wait $pid && echo "stopped cleanly (exit 0); checkpoint written: $(ls "$tmp/state")"
pid=
