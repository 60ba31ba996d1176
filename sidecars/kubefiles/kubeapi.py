"""A minimal Kubernetes API client: list and watch ConfigMaps and Secrets.

No kubernetes Python client (60 MB of generated models for two GETs): the
credentials come from the pod's service account or a kubeconfig, a list is
one request through podkit.httpclient, and a watch is read as JSON lines (of
a chunked body) with an idle timeout, so a stream that stalls without closing
is noticed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from podkit import SecretFile, UsageError
from podkit._http1 import parse_chunk_size
from podkit.http import bearer_token_problem, ssl_context
from podkit.httpclient import HTTPClientError, fetch, host_header, read_body_of, read_head
from podkit.secrets import register_secret

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: A watch event line holds one whole object. etcd refuses a request over
#: 1.5 MiB (its default --max-request-bytes), so no stored object is larger;
#: as JSON its base64 data grows by 4/3 (2 MiB) and escaped text a little
#: more. A longer line is a failed watch (counted, relisted after a backoff),
#: never an unbounded buffer: the list still brings the object.
MAX_LINE = 4 << 20
#: How much of a watch body is read at once, whatever a chunk's size says:
#: the event buffer grows by at most this past MAX_LINE.
READ_SIZE = 1 << 16
#: The reader's own limit: response head and chunk-size lines, never events.
HEAD_LIMIT = 64 << 10
#: A list page of 500 objects; a bigger one is refused rather than truncated.
MAX_PAGE = 256 << 20
#: All pages of one list together: pagination must not be a way around
#: MAX_PAGE (every object is held until the list ends).
MAX_LIST = MAX_PAGE
#: Pages of one list: 5 million objects at 500 a page. A server that hands out
#: continue tokens without end (or repeats one) cannot keep a list going forever.
MAX_LIST_PAGES = 10_000

PLURAL = {"configmap": "configmaps", "secret": "secrets"}


class APIError(Exception):
    """The API answered an error, or could not be reached; `status` 0 for the latter."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Gone(APIError):
    """410: the resourceVersion is too old; list again."""

    def __init__(self, message: str = "resourceVersion expired (410 Gone)") -> None:
        super().__init__(410, message)


@dataclass
class Credentials:
    server: str
    namespace: str | None = None
    token_file: str | None = None
    token: str | None = None
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_data: tuple[bytes, bytes] | None = None
    cert_file: tuple[str, str] | None = None
    insecure: bool = False

    def ssl(self) -> ssl.SSLContext | None:
        if not self.server.startswith("https:"):
            return None
        ctx = ssl_context(self.ca_file, self.insecure)
        if self.ca_data:
            ctx.load_verify_locations(cadata=self.ca_data.decode("ascii", "replace"))
        if self.cert_file:
            ctx.load_cert_chain(*self.cert_file)
        elif self.cert_data:
            # ssl wants files: a private 0600 temporary, removed once loaded.
            with tempfile.TemporaryDirectory(prefix="kubefiles-") as d:
                cert, key = os.path.join(d, "cert"), os.path.join(d, "key")
                for path, data in ((cert, self.cert_data[0]), (key, self.cert_data[1])):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                ctx.load_cert_chain(cert, key)
        return ctx


def in_cluster(sa_dir: str = SA_DIR, server: str | None = None) -> Credentials:
    """The pod's own credentials: the service account's token, CA and namespace.

    With an explicit `server` and no token file, no token is sent (a local
    `kubectl proxy` adds the user's own credentials).
    """
    explicit = server is not None
    if server is None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise UsageError(
                "not in a pod (KUBERNETES_SERVICE_HOST unset): give --kubeconfig or --server"
            )
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    token_path = os.path.join(sa_dir, "token")
    token: str | None = token_path
    if not os.path.exists(token_path):
        if not explicit:
            raise UsageError(f"--service-account-dir: no token at {token_path}")
        token = None  # --server without a token: `kubectl proxy` authenticates for us
    ca = os.path.join(sa_dir, "ca.crt")
    ns = None
    with contextlib.suppress(OSError), open(os.path.join(sa_dir, "namespace")) as f:
        ns = f.read().strip() or None
    return Credentials(
        server=server.rstrip("/"),
        namespace=ns,
        token_file=token,
        ca_file=ca if os.path.exists(ca) else None,
    )


def from_kubeconfig(path: str, context: str | None = None) -> Credentials:
    """server, CA, token or client certificate of a kubeconfig's (current) context.

    Exec and auth-provider plugins are not run: a laptop user with one of
    those can `kubectl proxy` and give --server http://127.0.0.1:8001.
    """
    from podkit.options import load_yaml

    doc = load_yaml(path, "--kubeconfig")
    if not isinstance(doc, dict):
        raise UsageError(f"--kubeconfig {path}: not a kubeconfig")
    base = os.path.dirname(os.path.abspath(path))

    def named(section: str, name: str) -> dict[str, Any]:
        for item in doc.get(section) or []:
            if isinstance(item, dict) and item.get("name") == name:
                return dict(item.get(section[:-1]) or {})
        raise UsageError(f"--kubeconfig {path}: no {section[:-1]} named {name!r}")

    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise UsageError(f"--kubeconfig {path}: no current-context")
    ctx = named("contexts", str(ctx_name))
    cluster = named("clusters", str(ctx.get("cluster")))
    user = named("users", str(ctx.get("user"))) if ctx.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise UsageError(
            f"--kubeconfig {path}: exec/auth-provider users are not supported; "
            "use `kubectl proxy` and --server http://127.0.0.1:8001"
        )

    def rel(p: Any) -> str:
        return os.path.join(base, str(p))

    def b64(v: Any) -> bytes:
        try:
            return base64.b64decode(str(v), validate=True)
        except ValueError:
            raise UsageError(f"--kubeconfig {path}: a *-data field is not base64") from None

    server = cluster.get("server")
    if not server:
        raise UsageError(f"--kubeconfig {path}: cluster has no server")
    creds = Credentials(server=str(server).rstrip("/"), namespace=ctx.get("namespace"))
    creds.insecure = bool(cluster.get("insecure-skip-tls-verify"))
    if cluster.get("certificate-authority-data"):
        creds.ca_data = b64(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        creds.ca_file = rel(cluster["certificate-authority"])
    if user.get("tokenFile"):
        creds.token_file = rel(user["tokenFile"])
    elif user.get("token"):
        creds.token = str(user["token"])
        # a tokenFile's content is registered as it is read; an inline one here
        register_secret(creds.token)
    if user.get("client-certificate-data") and user.get("client-key-data"):
        creds.cert_data = (b64(user["client-certificate-data"]), b64(user["client-key-data"]))
    elif user.get("client-certificate") and user.get("client-key"):
        creds.cert_file = (rel(user["client-certificate"]), rel(user["client-key"]))
    return creds


def collection_path(resource: str, namespace: str | None) -> str:
    plural = PLURAL[resource]
    if namespace is None:
        return f"/api/v1/{plural}"
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/{plural}"


class KubeAPI:
    """Lists and watches over plain asyncio streams, one connection per request.

    Not aiohttp's client: importing it costs ~10 MB of RSS, a quarter of the
    sidecar's budget, for pooling that a list every few minutes and a few
    long-lived watches do not need.
    """

    def __init__(self, creds: Credentials, request_timeout: float = 30.0) -> None:
        self.creds = creds
        self.request_timeout = request_timeout
        # The token is re-read (one stat) before every request: projected
        # service-account tokens are rotated by the kubelet and expire.
        self._token = SecretFile(creds.token_file) if creds.token_file else None
        self._ssl = creds.ssl()

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        token = self.creds.token
        if self._token is not None:
            try:
                token = self._token.value()
            except OSError as exc:
                raise APIError(0, f"token file {self._token.path}: {exc.strerror or exc}") from None
            problem = bearer_token_problem(token)
            if problem:
                raise APIError(0, f"token file {self._token.path}: {problem}")
        if token:
            h["Authorization"] = f"Bearer {token}"
        return h

    @staticmethod
    def _error(status: int, body: bytes, verb: str, what: str) -> APIError:
        try:
            doc = json.loads(body)
            message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
        except (ValueError, RecursionError):
            message = ""
        if status == 410:
            return Gone(f"{verb} {what}: 410 Gone ({message or 'resourceVersion expired'})")
        if status == 403:
            return APIError(
                403,
                f"forbidden: the service account needs RBAC verb {verb!r} on {what}"
                + (f" ({message})" if message else ""),
            )
        if status == 401:
            return APIError(401, f"unauthorized: the token was refused ({message or 'no reason'})")
        return APIError(status, f"{verb} {what}: HTTP {status} {message}".rstrip())

    async def list(
        self, resource: str, namespace: str | None, selector: str, page: int = 500
    ) -> tuple[list[dict[str, Any]], str]:
        """Every matching object, and the list's resourceVersion to watch from."""
        what = _what(resource, namespace)
        url = self.creds.server + collection_path(resource, namespace)
        items: list[dict[str, Any]] = []
        cont = ""
        seen: set[str] = set()  # continue tokens already followed
        total = 0
        for _page in range(MAX_LIST_PAGES):
            q = {"labelSelector": selector, "limit": str(page)}
            if cont:
                q["continue"] = cont
            budget = min(MAX_PAGE, MAX_LIST - total)
            try:
                res = await fetch(
                    "GET",
                    f"{url}?{urlencode(q)}",
                    headers=self._headers(),
                    timeout=self.request_timeout,
                    ssl_ctx=self._ssl,
                    max_body=budget + 1,
                )
            except (OSError, HTTPClientError, asyncio.IncompleteReadError) as exc:
                raise APIError(0, f"list {what}: {type(exc).__name__}: {exc}") from None
            if res.status != 200:
                raise self._error(res.status, res.body, "list", what)
            if len(res.body) > budget:
                if budget == MAX_PAGE:
                    raise APIError(0, f"list {what}: a page over {MAX_PAGE} bytes")
                raise APIError(0, f"list {what}: pages over {MAX_LIST} bytes in all")
            total += len(res.body)
            try:
                body = json.loads(res.body)
            except (ValueError, RecursionError) as exc:  # nested past the recursion limit
                raise APIError(0, f"list {what}: malformed JSON: {exc}") from None
            if not isinstance(body, dict):
                raise APIError(0, f"list {what}: not a list of objects")
            page_items, meta = body.get("items") or [], body.get("metadata") or {}
            if not isinstance(page_items, list) or not isinstance(meta, dict):
                raise APIError(0, f"list {what}: not a list of objects")
            items.extend(x for x in page_items if isinstance(x, dict))
            cont = str(meta.get("continue") or "")
            if not cont:
                return items, str(meta.get("resourceVersion") or "")
            if cont in seen:
                raise APIError(0, f"list {what}: the server repeated a continue token")
            seen.add(cont)
        raise APIError(0, f"list {what}: more than {MAX_LIST_PAGES} pages")

    async def watch(
        self,
        resource: str,
        namespace: str | None,
        selector: str,
        resource_version: str,
        timeout_seconds: int,
        idle_timeout: float,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each event until the server closes the stream.

        Raises Gone on 410 (at open or as an ERROR event), TimeoutError when
        nothing at all (not even a bookmark) arrived for `idle_timeout`.
        """
        what = _what(resource, namespace)
        q = {
            "watch": "1",
            "labelSelector": selector,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        parts = urlsplit(self.creds.server)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        target = f"{parts.path}{collection_path(resource, namespace)}?{urlencode(q)}"
        head = [
            f"GET {target} HTTP/1.1",
            f"Host: {host_header(host, port, parts.scheme)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in self._headers().items()),
        ]
        try:
            async with asyncio.timeout(idle_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._ssl, limit=HEAD_LIMIT
                )
        except TimeoutError:
            raise
        except OSError as exc:
            raise APIError(0, f"watch {what}: {type(exc).__name__}: {exc}") from None
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            async with asyncio.timeout(idle_timeout):
                await writer.drain()
                status, headers = await read_head(reader)
            if status != 200:
                async with asyncio.timeout(self.request_timeout):
                    body = await read_body_of(reader, status, headers, 64 * 1024)
                raise self._error(status, body, "watch", what)
            chunked = "chunked" in ",".join(headers.get("transfer-encoding", [])).lower()
            body_reader = _Chunked(reader) if chunked else reader
            buf = bytearray()
            while True:
                async with asyncio.timeout(idle_timeout):
                    chunk = await body_reader.read(READ_SIZE)
                if not chunk:
                    return
                # Only the new bytes are searched (.find, not `in`: no int
                # conversion tried first, and a start offset).
                scan = len(buf)
                buf += chunk
                start = 0
                while (nl := buf.find(b"\n", scan)) >= 0:
                    if nl - start > MAX_LINE:
                        raise APIError(0, f"watch {what}: an event line over {MAX_LINE} bytes")
                    line = bytes(buf[start:nl])
                    start = scan = nl + 1
                    if line.strip():
                        yield _event(line, what)
                del buf[:start]
                if len(buf) > MAX_LINE:
                    raise APIError(0, f"watch {what}: an event line over {MAX_LINE} bytes")
        except TimeoutError:
            raise  # idle (TimeoutError is an OSError too: keep it apart)
        except (
            OSError,
            HTTPClientError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,  # a chunk-size line longer than HEAD_LIMIT
            ValueError,
        ) as exc:
            raise APIError(0, f"watch {what}: {type(exc).__name__}: {exc}") from None
        finally:
            writer.close()


class _Chunked:
    """A chunked body read in pieces of at most `n` bytes, however big a chunk says it is.

    `readexactly(size)` of a whole chunk would buffer all of it: a peer that
    announces a chunk of terabytes and sends no newline must not grow memory.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.left = 0  # bytes of the current chunk not read yet
        self.done = False

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes of the body; b"" at its end."""
        if self.done:
            return b""
        if not self.left:
            try:  # hex digits only: int(x, 16) would take "-1", "0x1", "1_0"
                self.left = parse_chunk_size(await self.reader.readuntil(b"\r\n"))
            except ValueError:
                raise HTTPClientError("malformed chunked body") from None
            if not self.left:
                self.done = True
                return b""
        data = await self.reader.readexactly(min(n, self.left))
        self.left -= len(data)
        if not self.left and await self.reader.readexactly(2) != b"\r\n":
            raise HTTPClientError("malformed chunked body")
        return data


def _event(line: bytes, what: str) -> tuple[str, dict[str, Any]]:
    try:
        ev = json.loads(line)
        kind, obj = str(ev["type"]), ev["object"]
        if not isinstance(obj, dict):
            raise TypeError("object is not a mapping")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise APIError(0, f"watch {what}: malformed event: {exc}") from None
    if kind == "ERROR":
        code = obj.get("code")
        if code == 410 or obj.get("reason") in ("Expired", "Gone"):
            raise Gone(f"watch {what}: {obj.get('message') or '410 Gone'}")
        try:
            status = int(code or 0)
        except (TypeError, ValueError, OverflowError):  # a list, a mapping, 1e999
            status = 0
        if not 100 <= status <= 599:
            # The status becomes a label of api_errors_total: any other number
            # a peer sends would be one more time series, without end.
            status = 0
        raise APIError(status, f"watch {what}: {obj.get('message') or obj}")
    return kind, obj


def _what(resource: str, namespace: str | None) -> str:
    plural = PLURAL[resource]
    return f"{plural} in namespace {namespace}" if namespace else f"{plural} (all namespaces)"
