"""kubefiles as a real subprocess against a FAKE Kubernetes API (tests/peers/kubeapi.py).

No Kubernetes API server can run here, so the peer is an aiohttp fake that
implements list and watch for ConfigMaps and Secrets the way the real one
documents them (resourceVersions, bookmarks, 410 on a stale resume, label
selectors, namespaces, bearer tokens, 403s). It misbehaves on demand the ways
real ones do; after each, the folder must equal the API's state within the
documented bound, and /healthz must have been 503 while kubefiles could not
know that state.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import ProgramProcess, run_program, wait_until
from tests.peers.kubeapi import FakeKubeAPI, kubeapi  # noqa: F401
from tests.peers.prometheus import promtool_check

MANIFEST = ".kubefiles-manifest.json"
#: Test timings: bookmarks every 0.2 s, a watch with nothing for 0.8 s is
#: relisted, /healthz fails after 1.2 s without news.
FAST = [
    "--watch-idle-timeout",
    "0.8s",
    "--stale-after",
    "1.2s",
    "--retry-max-backoff",
    "0.3s",
    "--max-watch-age",
    "30s",
    "--resync",
    "60s",
]


def on_disk(folder: Path) -> dict[str, bytes]:
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(".kubefiles-tmp"):
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def expected(api: FakeKubeAPI, selector: tuple[str, str], ns: str = "default") -> dict[str, bytes]:
    import base64

    out: dict[str, bytes] = {}
    for (plural, ons, _name), obj in sorted(api.objects.items()):
        labels = obj["metadata"]["labels"]
        if ons != ns or labels.get(selector[0]) != selector[1]:
            continue
        for k, v in obj.get("data", {}).items():
            out[k] = base64.b64decode(v) if plural == "secrets" else v.encode()
        for k, v in obj.get("binaryData", {}).items():
            out[k] = base64.b64decode(v)
    return out


class HealthLog:
    """Polls /healthz in a thread and remembers every status it saw, with when."""

    def __init__(self, proc: ProgramProcess) -> None:
        self.proc = proc
        self.seen: list[tuple[float, float, int]] = []  # (monotonic, wall clock, status)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                t, w = time.monotonic(), time.time()
                self.seen.append((t, w, self.proc.get("/healthz", timeout=1)[0]))
            except OSError:
                pass
            self._stop.wait(0.05)

    def codes(self, since: float = 0.0) -> set[int]:
        return {c for t, _w, c in self.seen if t >= since}

    def stop(self) -> None:
        self._stop.set()
        self._t.join(2)


@pytest.fixture
def sa(tmp_path: Path) -> Path:
    d = tmp_path / "sa"
    d.mkdir()
    (d / "token").write_text("token-1\n")
    (d / "namespace").write_text("default\n")
    return d


def start(
    api: FakeKubeAPI, sa: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[ProgramProcess, Path]:
    folder = tmp_path / "out"
    args = [
        "--server",
        api.url,
        "--service-account-dir",
        str(sa),
        "--label",
        "grafana_dashboard=1",
        "--folder",
        str(folder),
        *FAST,
        *extra,
    ]
    return ProgramProcess("kubefiles", args, env=env, tmp=tmp_path), folder


@pytest.fixture
def seeded(kubeapi: FakeKubeAPI) -> FakeKubeAPI:  # noqa: F811
    kubeapi.apply("configmap", "default", "a", {"a.json": '{"a":1}'}, {"grafana_dashboard": "1"})
    kubeapi.apply("configmap", "default", "b", {"b.json": '{"b":1}'}, {"grafana_dashboard": "1"})
    kubeapi.apply("configmap", "default", "other", {"x.json": "x"}, {"app": "x"})
    kubeapi.apply("configmap", "elsewhere", "c", {"c.json": "c"}, {"grafana_dashboard": "1"})
    return kubeapi


SEL = ("grafana_dashboard", "1")


def converge(api: FakeKubeAPI, folder: Path, timeout: float, ns: str = "default") -> None:
    wait_until(
        lambda: on_disk(folder) == expected(api, SEL, ns),
        timeout,
        what=f"folder == API state (have {sorted(on_disk(folder))})",
    )


def test_list_watch_create_modify_delete(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    api = seeded
    with start(api, sa, tmp_path, "--resource", "both")[0] as p:
        folder = tmp_path / "out"
        p.wait_ready()
        assert on_disk(folder) == {"a.json": b'{"a":1}', "b.json": b'{"b":1}'}
        (folder / "mine.txt").write_text("not kubefiles'")
        api.apply("secret", "default", "s", {"pw.txt": "hunter22"}, {"grafana_dashboard": "1"})
        api.apply(
            "configmap",
            "default",
            "bin",
            {},
            {"grafana_dashboard": "1"},
            binary={"logo.png": b"\x89PNG\x00\xff"},
        )
        api.apply("configmap", "default", "a", {"a.json": '{"a":2}'}, {"grafana_dashboard": "1"})
        api.delete("configmap", "default", "b")
        wait_until(
            lambda: (
                on_disk(folder)
                == {
                    "a.json": b'{"a":2}',
                    "pw.txt": b"hunter22",
                    "logo.png": b"\x89PNG\x00\xff",
                    "mine.txt": b"not kubefiles'",
                }
            ),
            5,
            what="events applied",
        )
        # Relabelled out of the selector: its files go, as for a deletion.
        api.apply("configmap", "default", "a", {"a.json": '{"a":2}'}, {"grafana_dashboard": "0"})
        wait_until(lambda: "a.json" not in on_disk(folder), 5, what="relabel removes")
        api.delete("secret", "default", "s")
        api.delete("configmap", "default", "bin")
        wait_until(lambda: on_disk(folder) == {"mine.txt": b"not kubefiles'"}, 5, what="only mine")
        # The manifest is saved after the removals (a crash in between only
        # leaves it naming files that are gone, which the next pass drops).
        wait_until(
            lambda: json.loads((folder / MANIFEST).read_text())["files"] == {},
            5,
            what="an empty manifest",
        )
        st = p.status()
        assert st["namespaces"]["configmap/default"]["state"] == "watching"
        assert st["namespaces"]["secret/default"]["lists"] >= 1
        assert p.metric("podkit_kubefiles_files_written_total") >= 5
        assert p.metric("podkit_kubefiles_files_removed_total") >= 4
        assert p.metric("podkit_kubefiles_watch_events_total", type="DELETED") >= 3
        wait_until(
            lambda: p.metric("podkit_kubefiles_watch_events_total", type="BOOKMARK") >= 1,
            3,
            what="a bookmark",
        )
        # list, then watches from the list's version with bookmarks (never an RV of 0).
        assert ("list", "/api/v1/namespaces/default/configmaps") in api.requests
        assert all("hunter22" not in line for line in p.stderr().splitlines())
        assert p.get("/healthz")[0] == 200
        promtool_check(p.get("/metrics")[2])


def test_unsafe_keys_refused_and_reported(kubeapi: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:  # noqa: F811
    api = kubeapi
    api.apply(
        "configmap",
        "default",
        "evil",
        {"..": "x", "a/b": "y", "": "z", "ok.json": "ok"},
        {"grafana_dashboard": "1"},
        annotations={"k8s-sidecar-target-directory": "../../etc"},
    )
    api.apply(
        "configmap",
        "default",
        "sub",
        {"d.json": "d"},
        {"grafana_dashboard": "1"},
        annotations={"k8s-sidecar-target-directory": "team-a"},
    )
    with start(api, sa, tmp_path)[0] as p:
        folder = tmp_path / "out"
        p.wait_ready()
        wait_until(lambda: on_disk(folder) == {"team-a/d.json": b"d"}, 5, what="subfolder")
        refused = p.status()["refused"]
        reasons = {(r["key"], r["reason"].split(" (")[0]) for r in refused}
        assert ("k8s-sidecar-target-directory", "folder outside --folder") in reasons
        assert not (tmp_path / "etc").exists()
        api.apply(
            "configmap",
            "default",
            "evil",
            {"..": "x", "a/b": "y", "": "z"},
            {"grafana_dashboard": "1"},
        )
        wait_until(lambda: len(p.status()["refused"]) >= 4, 5, what="unsafe keys reported")
        keys = {r["key"] for r in p.status()["refused"]}
        assert {"..", "a/b", ""} <= keys
        assert p.metric("podkit_kubefiles_refused_total") >= 4
        assert on_disk(folder) == {"team-a/d.json": b"d"}


def test_stalled_watch_is_relisted(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    api = seeded
    with start(api, sa, tmp_path)[0] as p:
        folder = tmp_path / "out"
        p.wait_ready()
        api.stall(sticky=True)  # the connection stays open, nothing comes, new ones alike
        t0 = time.monotonic()
        api.apply("configmap", "default", "a", {"a.json": "stalled"}, {"grafana_dashboard": "1"})
        api.delete("configmap", "default", "b")
        # Documented bound: --watch-idle-timeout (0.8 s) and one list.
        converge(api, folder, 5)
        assert time.monotonic() - t0 < 3
        assert p.metric("podkit_kubefiles_watch_restarts_total", reason="idle") >= 1, p.stderr()
        api.unstall()
        api.apply("configmap", "default", "a", {"a.json": "live"}, {"grafana_dashboard": "1"})
        converge(api, folder, 5)


def test_connection_reset_mid_stream(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    api = seeded
    with start(api, sa, tmp_path)[0] as p:
        folder = tmp_path / "out"
        p.wait_ready()
        for i in range(3):
            api.reset()
            api.apply("configmap", "default", "a", {"a.json": f"v{i}"}, {"grafana_dashboard": "1"})
        converge(api, folder, 5)
        assert p.metric("podkit_kubefiles_watch_restarts_total") >= 1


def test_gone_on_resume_relists(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    api = seeded
    with start(api, sa, tmp_path)[0] as p:
        folder = tmp_path / "out"
        p.wait_ready()
        lists = p.metric("podkit_kubefiles_lists_total")
        api.stall()  # this watch goes quiet; what happens next is lost from history
        api.apply("configmap", "default", "n", {"n.json": "new"}, {"grafana_dashboard": "1"})
        api.delete("configmap", "default", "a")
        api.compact()
        api.gone_next_watch()
        converge(api, folder, 5)
        wait_until(lambda: p.metric("podkit_kubefiles_gone_total") >= 1, 5, what="a 410")
        assert p.metric("podkit_kubefiles_lists_total") > lists


def test_500_burst_health_and_recovery(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    api = seeded
    with start(api, sa, tmp_path)[0] as p:
        folder = tmp_path / "out"
        p.wait_ready()
        health = HealthLog(p)
        try:
            t0 = time.monotonic()
            fresh = p.status()["namespaces"]["configmap/default"]["last_fresh"]
            api.fail(500, 2.5)
            # An object deleted and one changed while nothing can be read.
            api.delete("configmap", "default", "b")
            api.apply("configmap", "default", "a", {"a.json": "during"}, {"grafana_dashboard": "1"})
            wait_until(lambda: 503 in health.codes(t0), 5, what="/healthz 503 during the burst")
            converge(api, folder, 6)
            wait_until(lambda: p.get("/healthz")[0] == 200, 5, what="healthy again")
            assert p.metric("podkit_kubefiles_api_errors_total", code="500") >= 1
        finally:
            health.stop()
        # 503 only while it could not know: not before --stale-after (1.2 s)
        # had passed since the last news it had.
        first_bad = min(w for _t, w, c in health.seen if c == 503)
        last_news = datetime.fromisoformat(fresh.replace("Z", "+00:00")).timestamp()
        assert first_bad - last_news >= 1.2 - 0.01


def test_deleted_while_watch_down(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    api = seeded
    with start(api, sa, tmp_path)[0] as p:
        folder = tmp_path / "out"
        p.wait_ready()
        health = HealthLog(p)
        try:
            api.fail(503, 2.0)
            api.delete("configmap", "default", "a")
            api.compact()  # the DELETED event is gone from history: only a list can tell
            wait_until(lambda: 503 in health.codes(), 5, what="503 while down")
            converge(api, folder, 6)
            assert "a.json" not in on_disk(folder)
        finally:
            health.stop()


def test_events_during_relist(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    api = seeded
    api.list_delay = 0.5
    with start(api, sa, tmp_path)[0] as p:
        folder = tmp_path / "out"
        done = threading.Event()

        def churn() -> None:
            i = 0
            while not done.is_set():
                api.apply(
                    "configmap", "default", "a", {"a.json": f"{i}"}, {"grafana_dashboard": "1"}
                )
                i += 1
                time.sleep(0.03)

        t = threading.Thread(target=churn)
        t.start()
        try:
            p.wait_ready()
            api.reset()  # force a relist (which takes 0.5 s) while the churn goes on
            wait_until(lambda: p.metric("podkit_kubefiles_lists_total") >= 2, 5, what="a relist")
        finally:
            done.set()
            t.join()
        api.apply("configmap", "default", "z", {"z.json": "last"}, {"grafana_dashboard": "1"})
        converge(api, folder, 5)


def test_token_rotation(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    api = seeded
    with start(api, sa, tmp_path)[0] as p:
        folder = tmp_path / "out"
        p.wait_ready()
        health = HealthLog(p)
        try:
            # The API stops accepting the old token before the kubelet rotates the file.
            api.tokens = {"token-2"}
            api.reset()
            api.apply("configmap", "default", "b", {"b.json": "rot"}, {"grafana_dashboard": "1"})
            wait_until(lambda: 503 in health.codes(), 5, what="503 without a valid token")
            assert on_disk(folder)["b.json"] == b'{"b":1}'
            tmp = sa / ".token.tmp"
            tmp.write_text("token-2\n")
            os.replace(tmp, sa / "token")
            converge(api, folder, 5)
            wait_until(lambda: p.get("/healthz")[0] == 200, 5, what="healthy with the new token")
        finally:
            health.stop()
        assert "Bearer token-2" in api.auth_seen
        assert "token-2" not in p.stderr()
        assert p.metric("podkit_kubefiles_api_errors_total", code="401") >= 1


def test_an_empty_token_file_is_named_and_never_sent(
    seeded: FakeKubeAPI, sa: Path, tmp_path: Path
) -> None:
    """A projected token not written yet: the error names the file, no request goes
    out with `Authorization: Bearer `, and the folder fills once the token is there."""
    (sa / "token").write_text("\n")
    with start(seeded, sa, tmp_path)[0] as p:
        folder = tmp_path / "out"
        wait_until(lambda: f"token file {sa / 'token'}: empty" in p.stderr(), 10)
        assert p.get("/readyz")[0] == 503
        assert seeded.auth_seen == []
        tmp = sa / ".token.tmp"
        tmp.write_text("token-1\n")
        os.replace(tmp, sa / "token")
        converge(seeded, folder, 10)
        p.wait_ready()
    assert set(seeded.auth_seen) == {"Bearer token-1"}


def test_forbidden_names_verb_and_resource(kubeapi: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:  # noqa: F811
    kubeapi.forbidden.add(("list", "secrets"))
    with start(kubeapi, sa, tmp_path, "--resource", "secret")[0] as p:
        wait_until(lambda: "RBAC verb 'list' on secrets" in p.stderr(), 5, what="a 403 explained")
        st = p.status()["namespaces"]["secret/default"]
        assert "list" in st["last_error"] and "secrets" in st["last_error"]
        assert p.get("/readyz")[0] == 503
    # As an init container: exit 1 at once (retrying cannot grant a permission).
    res = run_program(
        "kubefiles",
        [
            "--server",
            kubeapi.url,
            "--service-account-dir",
            str(sa),
            "--label",
            "a=1",
            "--folder",
            str(tmp_path / "init"),
            "--resource",
            "secret",
            "--one-time",
        ],
        timeout=30,
    )
    assert res.returncode == 1
    assert b"RBAC verb 'list' on secrets in namespace default" in res.stderr


def test_resync_repairs_tampered_files(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    api = seeded
    proc, folder = start(api, sa, tmp_path, "--resync", "1s")
    with proc as p:
        p.wait_ready()
        (folder / "a.json").write_text("tampered")
        (folder / "b.json").unlink()
        converge(api, folder, 4)


def test_one_time_k8s_sidecar_env(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    """k8s-sidecar's variables, METHOD=LIST: an init container that writes once and exits 0."""
    folder = tmp_path / "init"
    env = {
        "LABEL": "grafana_dashboard",
        "LABEL_VALUE": "1",
        "FOLDER": str(folder),
        "NAMESPACE": "default,elsewhere",
        "RESOURCE": "configmap",
        "METHOD": "LIST",
        "UNIQUE_FILENAMES": "true",
        "DEFAULT_FILE_MODE": "0600",
    }
    p = ProgramProcess(
        "kubefiles",
        ["--server", seeded.url, "--service-account-dir", str(sa), "--admin-addr", "off"],
        env=env,
        tmp=tmp_path,
    )
    with p:
        assert p.wait(20) == 0, p.stderr()
    got = on_disk(folder)
    assert got == {
        "namespace_default.configmap_a.a.json": b'{"a":1}',
        "namespace_default.configmap_b.b.json": b'{"b":1}',
        "namespace_elsewhere.configmap_c.c.json": b"c",
    }
    mode = (folder / "namespace_default.configmap_a.a.json").stat().st_mode & 0o777
    assert mode == 0o600


def test_webhook_after_change(seeded: FakeKubeAPI, sa: Path, tmp_path: Path) -> None:
    from tests.peers.receiver import Receiver

    rx = Receiver()
    rx.start()
    try:
        ran = tmp_path / "ran"
        proc, _ = start(
            seeded,
            sa,
            tmp_path,
            "--webhook-url",
            rx.url + "/reload",
            "--webhook-method",
            "POST",
            # The receiver answers this POST 400: counted all the same, but
            # accepted, so no retry is pending at the stop (which would wait
            # up to 5 s for it).
            "--webhook-status",
            "0",
            "--script",
            f"ls a.json >> {ran}",  # run in --folder, after the files are there
        )
        with proc as p:
            p.wait_ready()
            wait_until(lambda: rx.requests >= 1, 5, what="webhook after the first write")
            n = rx.requests
            seeded.apply("configmap", "default", "a", {"a.json": "2"}, {"grafana_dashboard": "1"})
            wait_until(lambda: rx.requests > n, 5, what="webhook after a change")
            wait_until(
                lambda: ran.exists() and ran.read_text().count("a.json") >= 2, 5, what="script"
            )
    finally:
        rx.stop()


def test_kubeconfig_https_client_certificate(tmp_path: Path) -> None:
    """A laptop's kubeconfig: https with the cluster CA and a client certificate, inline."""
    import base64
    import ssl

    import yaml

    from tests.peers.tls import make_ca

    tls = make_ca(tmp_path / "tls")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
    ctx.load_cert_chain(tls.server_cert, tls.server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    api = FakeKubeAPI(token="unused", ssl_ctx=ctx).start()
    try:
        api.apply("configmap", "team", "a", {"a.json": "tls"}, {"grafana_dashboard": "1"})

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        kc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "laptop",
            "contexts": [
                {"name": "laptop", "context": {"cluster": "c", "user": "me", "namespace": "team"}}
            ],
            "clusters": [
                {
                    "name": "c",
                    "cluster": {"server": api.url, "certificate-authority-data": b64(tls.ca)},
                }
            ],
            "users": [
                {
                    "name": "me",
                    "user": {
                        "client-certificate-data": b64(tls.client_cert),
                        "client-key-data": b64(tls.client_key),
                    },
                }
            ],
        }
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kc))
        folder = tmp_path / "out"
        args = ["--kubeconfig", str(tmp_path / "kubeconfig"), "--label", "grafana_dashboard=1"]
        with ProgramProcess(
            "kubefiles", [*args, "--folder", str(folder), *FAST], tmp=tmp_path
        ) as p:
            p.wait_ready()
            assert on_disk(folder) == {"a.json": b"tls"}
            api.apply("configmap", "team", "a", {"a.json": "tls 2"}, {"grafana_dashboard": "1"})
            wait_until(lambda: on_disk(folder) == {"a.json": b"tls 2"}, 5, what="watch over TLS")
            assert p.status()["namespaces"]["configmap/team"]["state"] == "watching"
    finally:
        api.stop()


def test_all_namespaces_set_selector_and_max_watch_age(
    kubeapi: FakeKubeAPI,  # noqa: F811
    sa: Path,
    tmp_path: Path,
) -> None:
    api = kubeapi
    api.apply("configmap", "ns1", "a", {"a.json": "1"}, {"grafana_dashboard": "yes"})
    api.apply("configmap", "ns2", "b", {"b.json": "2"}, {"grafana_dashboard": "1"})
    api.apply("configmap", "ns2", "c", {"c.json": "3"}, {"grafana_dashboard": "no"})
    folder = tmp_path / "out"
    args = [
        "--server",
        api.url,
        "--service-account-dir",
        str(sa),
        "--label",
        "grafana_dashboard in (1,yes)",
        "--folder",
        str(folder),
        "--namespace",
        "ALL",
        *FAST,
        "--max-watch-age",
        "1s",
    ]
    with ProgramProcess("kubefiles", args, tmp=tmp_path) as p:
        p.wait_ready()
        assert on_disk(folder) == {"a.json": b"1", "b.json": b"2"}
        assert ("list", "/api/v1/configmaps") in api.requests  # one cluster-wide list
        wait_until(
            lambda: p.metric("podkit_kubefiles_watch_restarts_total", reason="max_age") >= 2,
            5,
            what="watches reopened before --max-watch-age",
        )
        api.apply("configmap", "ns3", "d", {"d.json": "4"}, {"grafana_dashboard": "1"})
        wait_until(lambda: "d.json" in on_disk(folder), 5, what="an event in a new namespace")
        assert p.get("/healthz")[0] == 200
        assert p.metric("podkit_kubefiles_lists_total") == 1  # reopened from the version
        assert p.stop() == 0  # SIGTERM: a graceful stop


def test_watches_ended_at_once_are_backed_off(
    seeded: FakeKubeAPI, sa: Path, tmp_path: Path
) -> None:
    api = seeded
    with start(api, sa, tmp_path)[0] as p:
        p.wait_ready()
        api.close_watches_at_once = True
        api.reset()
        n0 = sum(1 for verb, _ in api.requests if verb == "watch")
        t0 = time.monotonic()
        wait_until(
            lambda: p.metric("podkit_kubefiles_watch_restarts_total", reason="closed") >= 3,
            5,
            what="closed watches",
        )
        time.sleep(1.5)  # a measuring window, not a synchronisation
        n = sum(1 for verb, _ in api.requests if verb == "watch") - n0
        # Backed off (at most 0.3 s here, full jitter): tens, not thousands.
        assert n < 15 * (time.monotonic() - t0) + 10, n
