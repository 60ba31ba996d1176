# gitsync: keep a checkout of a (local, file://) repository in sync, published atomically.
. examples/demo/lib.sh
set -eu
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.invalid
export GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.invalid
g() { git -c init.defaultBranch=main "$@" >/dev/null 2>&1; }

# An upstream repository and a clone to push from.
g init --bare "$tmp/config.git"
g clone "$tmp/config.git" "$tmp/work"
echo 'greeting: hello' > "$tmp/work/app.yaml"
g -C "$tmp/work" add -A; g -C "$tmp/work" commit -m v1; g -C "$tmp/work" push origin HEAD:main

echo "--- as an init container: --one-time exits 0 once the tree is published"
podkit gitsync --repo "file://$tmp/config.git" --root "$tmp/init" --one-time \
    --log-format text 2>&1 | grep -E 'published|one-time' || true
echo "\$ ls -l $tmp/init/config"; ls -l "$tmp/init/config" | sed 's/.* config/config/'

echo "--- as a sidecar (admin server on 127.0.0.1:9412)"
# "$PY" directly, not the podkit() function: $! must be the program's own pid.
"$PY" -m podkit gitsync --repo "file://$tmp/config.git" --root "$tmp/root" --period 1h \
    --log-format text &
pid=$!
wait_ready 9412
echo "\$ readlink $tmp/root/config"; readlink "$tmp/root/config"
echo "\$ cat $tmp/root/config/app.yaml"; cat "$tmp/root/config/app.yaml"

echo "--- push a change, then ask for a sync at once (what a git host's push webhook does)"
echo 'greeting: hello again' > "$tmp/work/app.yaml"
g -C "$tmp/work" commit -am v2; g -C "$tmp/work" push origin HEAD:main
show -X POST http://127.0.0.1:9412/sync
for _ in $(seq 1 50); do
    [ "$(cat "$tmp/root/config/app.yaml")" = 'greeting: hello again' ] && break
    sleep 0.1
done
echo "\$ cat $tmp/root/config/app.yaml"; cat "$tmp/root/config/app.yaml"
show http://127.0.0.1:9412/
show http://127.0.0.1:9412/metrics | grep -E '^podkit_gitsync_(syncs|fetches)_total' || true
kill -TERM $pid; wait $pid && echo "stopped cleanly (exit 0)"
pid=
