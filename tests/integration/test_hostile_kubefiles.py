"""kubefiles against an API server that sends what no real one would, byte for byte.

The peer is a raw socket server, not the aiohttp fake: it answers the list
and the watch with bytes this test chooses (an object whose metadata is no
mapping, an ERROR event whose code is a list or 1e999, a chunk-size line
longer than any event). Whatever it sends, kubefiles must keep running: a
malformed object is refused and counted while the others are written, a
malformed stream is a failed API call retried with backoff, and none of it is
an error record with a traceback. Before the fixes each of these ended a
scope's loop with an exception, and with it the whole program (exit 1,
"program failed" and a traceback).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ProgramProcess, wait_until

LABEL = {"grafana_dashboard": "1"}
GOOD = {
    "metadata": {"name": "good", "namespace": "default", "resourceVersion": "5", "labels": LABEL},
    "data": {"good.json": "{}"},
}
LATER = {
    "metadata": {"name": "later", "namespace": "default", "resourceVersion": "7", "labels": LABEL},
    "data": {"later.json": "[]"},
}


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class RawAPI:
    """Answers each list with `items` and each watch with `events` then a clean end.

    `watch_body`, when set, replaces the chunked events with raw bytes.
    """

    def __init__(self) -> None:
        self.items: list[Any] = [GOOD]
        self.list_body: bytes | None = None
        self.events: list[bytes] = []
        self.watch_body: bytes | None = None
        self.lists = 0
        self.watches = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._done = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while not self._done:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    got = conn.recv(65536)
                    if not got:
                        return
                    head += got
                target = head.split(b" ", 2)[1]
                if b"watch=1" in target:
                    self.watches += 1
                    body = self.watch_body
                    if body is None:
                        body = b"".join(chunk(e + b"\n") for e in self.events) + b"0\r\n\r\n"
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + body
                    )
                else:
                    self.lists += 1
                    doc = self.list_body
                    if doc is None:
                        doc = json.dumps(
                            {
                                "kind": "ConfigMapList",
                                "metadata": {"resourceVersion": "5"},
                                "items": self.items,
                            }
                        ).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(doc), doc)
                    )
            except OSError:
                return

    def close(self) -> None:
        self._done = True
        self.sock.close()


@pytest.fixture
def api() -> Iterator[RawAPI]:
    a = RawAPI()
    yield a
    a.close()


def run(api: RawAPI, tmp_path: Path) -> tuple[ProgramProcess, Path]:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    (sa / "namespace").write_text("default")
    folder = tmp_path / "out"
    args = [
        "--server", f"http://127.0.0.1:{api.port}",
        "--service-account-dir", str(sa),
        "--label", "grafana_dashboard=1",
        "--folder", str(folder),
        "--watch-idle-timeout", "0.8s",
        "--retry-max-backoff", "0.2s",
    ]  # fmt: skip
    return ProgramProcess("kubefiles", args, tmp=tmp_path), folder


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.json") if not p.name.startswith(".")}


def no_tracebacks(p: ProgramProcess) -> None:
    bad = [r for r in p.records() if r["level"] in ("error", "critical") or "exc_info" in r]
    assert bad == [], bad


BAD_OBJECTS = [
    {"metadata": "x"},
    {"metadata": [1, 2]},
    {"metadata": {"name": "b", "namespace": "default"}, "data": ["x"]},
    {"metadata": {"name": "b", "namespace": "default"}, "binaryData": "eA=="},
    {"metadata": {"name": "b", "annotations": ["k8s-sidecar-target-directory"]}, "data": {}},
    {"metadata": {"name": "b", "annotations": "k8s-sidecar-target-directory"}, "data": {}},
]


@pytest.mark.parametrize("bad", BAD_OBJECTS, ids=[json.dumps(b)[:40] for b in BAD_OBJECTS])
def test_a_malformed_object_is_refused_and_the_others_are_written(
    api: RawAPI, tmp_path: Path, bad: Any
) -> None:
    api.items = [bad, GOOD]
    api.events = [
        json.dumps({"type": "MODIFIED", "object": bad}).encode(),
        json.dumps({"type": "ADDED", "object": LATER}).encode(),
    ]
    p, folder = run(api, tmp_path)
    with p:
        p.wait_ready()
        wait_until(lambda: files(folder) == {"good.json", "later.json"}, 10, what="the good files")
        wait_until(lambda: api.watches >= 2, 10, what="a second watch")
        assert p.proc is not None and p.proc.poll() is None, p.stderr()
        assert p.metric("podkit_kubefiles_refused_total") >= 1
        no_tracebacks(p)


WATCH_BODIES = {
    "error-code-list": chunk(b'{"type": "ERROR", "object": {"code": [1]}}\n'),
    "error-code-huge": chunk(b'{"type": "ERROR", "object": {"code": 1e999}}\n'),
    "error-code-dict": chunk(b'{"type": "ERROR", "object": {"code": {"a": 1}}}\n'),
    "event-metadata-list": chunk(b'{"type": "ADDED", "object": {"metadata": [1]}}\n'),
    "chunk-size-line-too-long": b"1" * (5 << 20),
    "chunk-size-negative": b"-5\r\nhello\r\n",
    "not-json": chunk(b"\xff\xfe{\n"),
    # json.loads raises RecursionError, no ValueError, past the recursion limit
    "nested-too-deep": chunk(b'{"type": "ADDED", "object": ' + b"[" * 100_000 + b"\n"),
}


@pytest.mark.parametrize("body", list(WATCH_BODIES.values()), ids=list(WATCH_BODIES))
def test_a_malformed_watch_stream_is_a_failed_call_that_is_retried(
    api: RawAPI, tmp_path: Path, body: bytes
) -> None:
    api.watch_body = body
    p, folder = run(api, tmp_path)
    with p:
        p.wait_ready()
        wait_until(lambda: api.watches >= 3, 15, what="watches retried")
        assert p.proc is not None and p.proc.poll() is None, p.stderr()
        assert files(folder) == {"good.json"}
        no_tracebacks(p)


@pytest.mark.parametrize(
    "doc",
    [b"[]", b'{"items": 5}', b'{"items": [], "metadata": [1]}', b"[" * 100_000 + b"]" * 100_000],
    ids=["array", "items-int", "metadata-list", "nested-too-deep"],
)
def test_a_malformed_list_is_a_failed_call_that_is_retried(
    api: RawAPI, tmp_path: Path, doc: bytes
) -> None:
    api.list_body = doc
    p, _ = run(api, tmp_path)
    with p:
        wait_until(lambda: api.lists >= 3, 15, what="lists retried")
        assert p.proc is not None and p.proc.poll() is None, p.stderr()
        assert p.get("/readyz")[0] == 503
        no_tracebacks(p)
