"""A FAKE Kubernetes API server for ConfigMaps and Secrets (list and watch).

No API server can run here (no binaries, no network to fetch one; kmock is not
installed), so kubefiles is tested against this aiohttp fake. It implements
what kubefiles relies on, as the real API server documents it:

- `GET /api/v1[/namespaces/NS]/{configmaps,secrets}` with `labelSelector`
  (equality, set-based and existence forms), `limit` and `continue`; the
  list's `metadata.resourceVersion` is the store's version at the snapshot;
- `?watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=N`:
  the events after RV (from a history that `compact()` trims), then live
  ones, a BOOKMARK every `bookmark_interval`, closed after timeoutSeconds;
  a RV older than the history answers an ERROR event with a 410 Status,
  as the real one does;
- bearer tokens (401 for an unknown one) and refusals per verb/resource (403).

And the ways real ones misbehave, on demand: `stall()` (open watches go
silent without closing), `reset()` (connections cut mid-stream),
`gone_next_watch()`, `fail(500, seconds)` (an error burst), `list_delay`
(mutations land while a list is in flight).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from aiohttp import web

from tests.helpers import free_port
from tests.peers.aioapp import LoopThread

T = TypeVar("T")

PLURALS = {"configmaps": "ConfigMap", "secrets": "Secret"}


Requirement = tuple[str, str, frozenset[str]]  # (op, key, values)


def parse_selector(text: str) -> list[Requirement]:
    """A label selector as requirements that must all hold (see `matches`)."""
    reqs: list[Requirement] = []
    parts: list[str] = []
    depth, cur = 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for raw in parts:
        p = raw.strip()
        if not p:
            continue
        for op in (" notin ", " in ", "!=", "==", "="):
            if op in p:
                key, _, rest = p.partition(op)
                vals = frozenset(v.strip() for v in rest.strip().strip("()").split(","))
                reqs.append((op.strip().replace("==", "="), key.strip(), vals))
                break
        else:
            if p.startswith("!"):
                reqs.append(("!", p[1:].strip(), frozenset()))
            else:
                reqs.append(("exists", p, frozenset()))
    return reqs


def matches(reqs: list[Requirement], labels: dict[str, str]) -> bool:
    for op, key, vals in reqs:
        have = labels.get(key)
        ok = {
            "in": have in vals,
            "=": have in vals,
            "notin": have not in vals,
            "!=": have not in vals,
            "!": key not in labels,
            "exists": key in labels,
        }[op]
        if not ok:
            return False
    return True


class _Watch:
    def __init__(self, plural: str, ns: str | None, preds: list[Any]) -> None:
        self.plural, self.ns, self.preds = plural, ns, preds
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.stalled = False
        self.transport: asyncio.Transport | None = None

    def wants(self, plural: str, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if plural != self.plural or (self.ns is not None and meta["namespace"] != self.ns):
            return False
        labels = meta.get("labels") or {}
        return matches(self.preds, labels)


class FakeKubeAPI:
    def __init__(self, token: str = "token-1", ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.ssl_ctx = ssl_ctx  # with a client CA: a verified client certificate authenticates
        self.tokens = {token}
        self.forbidden: set[tuple[str, str]] = set()  # (verb, plural) answered 403
        self.bookmark_interval = 0.2
        self.list_delay = 0.0
        self.rv = 100
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.floor = self.rv  # the oldest RV a watch may resume from
        self.watches: list[_Watch] = []
        self.requests: list[tuple[str, str]] = []  # (verb, path) of each request
        self.auth_seen: list[str] = []
        self._fail_until = 0.0
        self._fail_status = 500
        self._gone_next = 0
        self.sticky_stall = False
        self.close_watches_at_once = False  # a broken proxy: every watch ends at once
        self._loop: LoopThread | None = None  # from start() to stop()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_ctx else 'http'}://127.0.0.1:{self.port}"

    # -- running ------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        app = web.Application()
        app.router.add_get("/api/v1/{plural}", self._handle)
        app.router.add_get("/api/v1/namespaces/{ns}/{plural}", self._handle)
        # Writes, as the real API takes them (create, replace, delete): what
        # `kubectl` would do; the demo uses them through curl.
        app.router.add_post("/api/v1/namespaces/{ns}/{plural}", self._write)
        app.router.add_put("/api/v1/namespaces/{ns}/{plural}/{name}", self._write)
        app.router.add_delete("/api/v1/namespaces/{ns}/{plural}/{name}", self._write)
        self._loop = LoopThread()
        self._loop.serve(app, self.port, ssl_context=self.ssl_ctx, shutdown_timeout=0.1)
        return self

    def stop(self) -> None:
        # cleans the runner up, then cancels the watches still streaming
        if self._loop is not None:
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "start() first"
        return self._loop.call(coro)

    # -- the store (called from the test's thread) ----------------------------

    def apply(
        self,
        kind: str,
        ns: str,
        name: str,
        data: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        binary: dict[str, bytes] | None = None,
    ) -> int:
        """Create or replace an object (Secret values given in clear, stored base64)."""
        return int(self._call(self._apply(kind, ns, name, data, labels, annotations, binary)))

    async def _apply(
        self,
        kind: str,
        ns: str,
        name: str,
        data: dict[str, str] | None,
        labels: dict[str, str] | None,
        annotations: dict[str, str] | None,
        binary: dict[str, bytes] | None,
    ) -> int:
        plural = kind + "s"
        key = (plural, ns, name)
        self.rv += 1
        if plural == "secrets":
            enc = {k: base64.b64encode(v.encode()).decode() for k, v in (data or {}).items()}
        else:
            enc = dict(data or {})
        obj: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": PLURALS[plural],
            "metadata": {
                "name": name,
                "namespace": ns,
                "resourceVersion": str(self.rv),
                "labels": dict(labels or {}),
                "annotations": dict(annotations or {}),
            },
            "data": enc,
        }
        if binary:
            obj["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
        kind_ev = "MODIFIED" if key in self.objects else "ADDED"
        old = self.objects.get(key)
        self.objects[key] = obj
        # A relabel out of the selector is a DELETED for that watch, as the real one does.
        self._emit(plural, kind_ev, obj, old)
        return self.rv

    def delete(self, kind: str, ns: str, name: str) -> None:
        self._call(self._delete(kind, ns, name))

    async def _delete(self, kind: str, ns: str, name: str) -> None:
        plural = kind + "s"
        obj = self.objects.pop((plural, ns, name))
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(plural, "DELETED", obj, None)

    def _emit(
        self, plural: str, kind: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        self.history.append((self.rv, plural, kind, obj))
        for w in self.watches:
            ev = _translate(w, plural, kind, obj, old)
            if ev is not None:
                w.queue.put_nowait(ev)

    def compact(self) -> None:
        """Forget the history: a watch resuming from before now gets 410."""
        self._call(self._compact())

    async def _compact(self) -> None:
        self.history.clear()
        self.floor = self.rv

    # -- misbehaviour ----------------------------------------------------------

    def stall(self, sticky: bool = False) -> None:
        """Open watches go silent (no events, no bookmarks) without closing;
        `sticky`: new ones too, until `unstall()` (lists still answer)."""

        async def go() -> None:
            self.sticky_stall = sticky
            for w in self.watches:
                w.stalled = True

        self._call(go())

    def unstall(self) -> None:
        self.sticky_stall = False

    def reset(self) -> None:
        """Cut every open watch connection mid-stream."""

        async def go() -> None:
            for w in list(self.watches):
                if w.transport is not None:
                    w.transport.abort()

        self._call(go())

    def fail(self, status: int, seconds: float) -> None:
        """Answer every request with `status` for this long (and cut open watches)."""
        self._fail_status = status
        self._fail_until = time.monotonic() + seconds
        self.reset()

    def gone_next_watch(self, times: int = 1) -> None:
        self._gone_next = times

    def open_watches(self) -> int:
        return sum(1 for w in self.watches if not w.stalled)

    # -- the HTTP side ---------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        plural = request.match_info["plural"]
        ns = request.match_info.get("ns")
        q = request.query
        watching = q.get("watch") in ("1", "true")
        verb = "watch" if watching else "list"
        self.requests.append((verb, request.path))
        if plural not in PLURALS:
            return web.json_response(_status(404, "NotFound", "no such resource"), status=404)
        auth = request.headers.get("Authorization", "")
        self.auth_seen.append(auth)
        peer_cert = request.transport.get_extra_info("peercert") if request.transport else None
        if not peer_cert and auth.removeprefix("Bearer ") not in self.tokens:
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        if time.monotonic() < self._fail_until:
            st = self._fail_status
            return web.json_response(_status(st, "InternalError", "injected failure"), status=st)
        if (verb, plural) in self.forbidden:
            msg = (
                f'{plural} is forbidden: User "system:serviceaccount:x:y" cannot {verb} '
                f'resource "{plural}" in API group "" in the namespace "{ns}"'
            )
            return web.json_response(_status(403, "Forbidden", msg), status=403)
        preds = parse_selector(q.get("labelSelector", ""))
        if watching:
            return await self._watch(request, plural, ns, preds)
        return await self._list(plural, ns, preds, q)

    async def _write(self, request: web.Request) -> web.StreamResponse:
        plural, ns = request.match_info["plural"], request.match_info["ns"]
        if plural not in PLURALS:
            return web.json_response(_status(404, "NotFound", "no such resource"), status=404)
        kind = plural[:-1]
        if request.method == "DELETE":
            name = request.match_info["name"]
            if (plural, ns, name) not in self.objects:
                return web.json_response(_status(404, "NotFound", f"{name} not found"), status=404)
            await self._delete(kind, ns, name)
            return web.json_response(_status(200, "", "deleted") | {"status": "Success"})
        obj = await request.json()
        meta = obj.get("metadata") or {}
        name = request.match_info.get("name") or meta["name"]
        data = obj.get("data") or {}
        if plural == "secrets":  # given base64 on the wire, as the real API takes them
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        binary = {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        await self._apply(
            kind, ns, name, data, meta.get("labels"), meta.get("annotations"), binary or None
        )
        return web.json_response(self.objects[(plural, ns, name)], status=201)

    def _select(self, plural: str, ns: str | None, preds: list[Any]) -> list[dict[str, Any]]:
        out = []
        for (p, ons, _name), obj in sorted(self.objects.items()):
            labels = obj["metadata"].get("labels") or {}
            if p == plural and (ns is None or ons == ns) and matches(preds, labels):
                out.append(copy.deepcopy(obj))
        return out

    async def _list(
        self, plural: str, ns: str | None, preds: list[Any], q: Any
    ) -> web.StreamResponse:
        cont = q.get("continue")
        if cont:
            rv, offset = (int(x) for x in cont.split(":"))
            items = [
                o
                for o in self._select(plural, ns, preds)
                if int(o["metadata"]["resourceVersion"]) <= rv
            ]
        else:
            rv, offset = self.rv, 0
            items = self._select(plural, ns, preds)
        if self.list_delay:
            await asyncio.sleep(self.list_delay)  # mutations meanwhile land after `rv`
        limit = int(q.get("limit", "0") or 0)
        page = items[offset : offset + limit] if limit else items[offset:]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and offset + limit < len(items):
            meta["continue"] = f"{rv}:{offset + limit}"
        body = {"kind": PLURALS[plural] + "List", "apiVersion": "v1", "metadata": meta}
        body["items"] = page
        return web.json_response(body)

    async def _watch(
        self, request: web.Request, plural: str, ns: str | None, preds: list[Any]
    ) -> web.StreamResponse:
        q = request.query
        since = int(q.get("resourceVersion") or self.rv)
        timeout = float(q.get("timeoutSeconds") or 1800)
        bookmarks = q.get("allowWatchBookmarks") == "true"
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        if self._gone_next > 0 or since < self.floor:
            self._gone_next = max(0, self._gone_next - 1)
            ev = {"type": "ERROR", "object": _status(410, "Expired", "too old resource version")}
            await resp.write(json.dumps(ev).encode() + b"\n")
            return resp
        if self.close_watches_at_once:
            return resp
        w = _Watch(plural, ns, preds)
        w.stalled = self.sticky_stall
        w.transport = request.transport  # type: ignore[assignment]
        for rv, p, kind, obj in self.history:
            if rv > since and w.wants(p, obj):
                w.queue.put_nowait((kind, obj))
        self.watches.append(w)
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.bookmark_interval
        try:
            while time.monotonic() < deadline:
                if w.transport is None or w.transport.is_closing():
                    break  # the client went away
                if w.stalled:
                    await asyncio.sleep(0.05)
                    continue
                wait = min(deadline, next_bookmark) - time.monotonic()
                try:
                    async with asyncio.timeout(max(0.0, wait)):
                        kind, obj = await w.queue.get()
                except TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark and not w.stalled:
                        ev = {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": PLURALS[plural],
                                "apiVersion": "v1",
                                "metadata": {"resourceVersion": str(self.rv)},
                            },
                        }
                        await resp.write(json.dumps(ev).encode() + b"\n")
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                if w.stalled:  # went silent while we waited: this event is never sent
                    continue
                await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watches.remove(w)
        return resp


def _translate(
    w: _Watch, plural: str, kind: str, obj: dict[str, Any], old: dict[str, Any] | None
) -> tuple[str, dict[str, Any]] | None:
    now = w.wants(plural, obj)
    before = old is not None and w.wants(plural, old)
    if kind == "DELETED":
        return (kind, obj) if now else None
    if now:
        return ("MODIFIED" if before else "ADDED", obj)
    if before:
        return ("DELETED", obj)
    return None


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@pytest.fixture
def kubeapi() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI().start()
    try:
        yield api
    finally:
        api.stop()


if __name__ == "__main__":  # `python -m tests.peers.kubeapi PORT TOKEN`: the demo's API server
    import sys

    api = FakeKubeAPI(sys.argv[2] if len(sys.argv) > 2 else "token-1")
    api.port = int(sys.argv[1])
    api.bookmark_interval = 5.0
    api.start()
    print(f"fake Kubernetes API on {api.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
