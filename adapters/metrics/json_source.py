"""The json source: fetch an app's JSON stats and turn chosen values into series.

What json_exporter users ask for is built in: strings mapped to numbers
(`value_map`), an object's keys as label values (`each: key`), labels from
static text, JSONPath, or templates mixing both. A missing key or a value
that cannot become a number skips that one series and is counted; nothing in
a document fails the scrape. A failing endpoint sets source_up to 0 and its
series disappear (stale values would look like live ones).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlsplit

from podkit import OptionGroup, UsageError, option, redact_url, register_secret
from podkit._http1 import loads_json
from podkit.http import AuthOptions, TLSClientOptions, client_session, parse_header

from .jsonpath import JSONPath, Match, PathError, absent, node_at
from .series import COUNTER, GAUGE, UNTYPED
from .sources import Cfg, Emit, Source, register
from .store import Conflict, Family, Store, escape_name, label_allowed, valid_label, valid_name

#: TLS and credentials are the core groups' keys (ca_file, insecure, cert_file,
#: key_file; bearer_token_file, basic_auth_user, basic_auth_password_file,
#: header_file), read with their flags' checks.
SOURCE_KEYS = (
    "type",
    "name",
    "url",
    "headers",
    "interval",
    "timeout",
    "max_body",
    "max_series",
    "metrics",
    *TLSClientOptions.keys(),
    *AuthOptions.keys(),
)
METRIC_KEYS = ("name", "path", "value", "labels", "type", "help", "each", "value_map")
ERROR_REASONS = (
    "fetch",
    "timeout",
    "http_status",
    "too_large",
    "invalid_json",
    "missing",
    "missing_label",
    "not_numeric",
    "duplicate",
    "too_many_series",
    "conflict",
)
_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


class _Missing(Exception):
    pass


def kube_to_jsonpath(text: str) -> str:
    """json_exporter's kubectl-style `{.items[*].name}` -> `$.items[*].name`;
    anything else is returned as it is."""
    t = text.strip()
    if t.startswith("{") and t.endswith("}") and t.count("{") == 1:
        inner = t[1:-1].strip()
        if inner.startswith((".", "[")):
            return "$" + inner
    return text


class _BadDocument(Exception):
    pass


class Template:
    """A label value: static text, a JSONPath, or text with {key} / {$...} / {@...}."""

    def __init__(self, text: str, where: str, metric_path: JSONPath) -> None:
        self.text = text
        self.parts: list[Any] = []
        s = text.strip()
        try:
            if s[:1] in ("$", "@") and "{" not in s:
                self.parts = [self._path(s, metric_path)]
                return
            pos = 0
            for m in _TEMPLATE.finditer(text):
                self.parts.append(text[pos : m.start()])
                if m.group() in ("{{", "}}"):
                    self.parts.append(m.group()[0])
                else:
                    inner = m.group(1).strip()
                    if inner == "key":
                        self.parts.append(("key",))
                    elif inner[:1] in ("$", "@"):
                        self.parts.append(self._path(inner, metric_path))
                    else:
                        raise UsageError(
                            f"{where}: unknown template field {{{inner}}} "
                            "(use {key}, {$.path} or {@.path})"
                        )
                pos = m.end()
            self.parts.append(text[pos:])
        except PathError as exc:
            raise UsageError(f"{where}: {exc}") from None
        self.parts = [p for p in self.parts if p != ""]

    @staticmethod
    def _path(text: str, metric_path: JSONPath) -> tuple[Any, ...]:
        p = JSONPath(text)
        if p.relative:
            return ("rel", p)
        # `$.queues[*].name` next to a metric path `$.queues[*].depth`: bind the
        # shared wildcard steps to the metric's own match, so each queue gets
        # its own name rather than the first one.
        k = p.shared_prefix(metric_path)
        if k and p.has_wildcard(k):
            return ("anchored", p, k)
        return ("abs", p)

    def render(self, root: Any, m: Match, key: Any, item: Any) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part[0] == "key":
                out.append(_label_text(key))
                continue
            if part[0] == "rel":
                v = part[1].first(item)
            elif part[0] == "anchored":
                path, k = part[1], part[2]
                found = path.find(node_at(root, m.path[:k]), start=k)
                v = found[0].value if found else None
                if not found:
                    raise _Missing
            else:
                v = part[1].first(root)
            if absent(v) or isinstance(v, dict | list):
                raise _Missing
            out.append(_label_text(v))
        return "".join(out)


def _label_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def to_number(v: Any, value_map: dict[Any, float] | None) -> float | None:
    if value_map:
        try:
            if v in value_map:
                return value_map[v]
        except TypeError:
            pass
        if isinstance(v, str | int | float) and str(v) in value_map:
            return value_map[str(v)]
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        try:
            return float(v)
        except OverflowError:
            return None
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


class MetricSpec:
    def __init__(self, cfg: Cfg) -> None:
        cfg.check_keys(METRIC_KEYS)
        self.name: str = cfg.text("name", required=True)
        try:
            self.path = JSONPath(kube_to_jsonpath(cfg.text("path", required=True)))
            value = cfg.text("value")
            self.value = JSONPath(value) if value else None
        except PathError as exc:
            raise cfg.err("path", str(exc)) from None
        if self.value is not None and not self.value.relative:
            raise cfg.err("value", "must be relative to each item (start with @)")
        #: A name drawn from the data (json_exporter #290): `{key}`, `{@.kind}`
        #: or `{$.app}` in the name, rendered per series, then escaped like an
        #: unmapped StatsD name; the store's conflict rules apply to each.
        self.name_template: Template | None = None
        if "{" in self.name:
            self.name_template = Template(self.name, f"{cfg.where}.name", self.path)
        elif not valid_name(self.name):
            raise cfg.err("name", f"{self.name!r} is not a valid metric name")
        self.kind = cfg.text("type", GAUGE)
        if self.kind not in (GAUGE, COUNTER, UNTYPED):
            raise cfg.err("type", f"{self.kind!r} is not one of gauge, counter, untyped")
        self.help = cfg.text("help", "")
        self.each = cfg.text("each")
        if self.each not in (None, "key"):
            raise cfg.err("each", "only 'key' is supported")
        labels = cfg.mapping("labels")
        for k in labels:
            if not isinstance(k, str) or not valid_label(k):
                raise cfg.err("labels", f"{k!r} is not a valid label name")
            if not label_allowed(k, self.kind):
                raise cfg.err("labels", f"{k!r} is reserved for histograms and summaries")
        self.labelnames = tuple(sorted(str(k) for k in labels))
        self.labels = [
            Template(str(labels[k]), f"{cfg.where}.labels.{k}", self.path)
            for k in sorted(labels, key=str)
        ]
        vm = cfg.mapping("value_map")
        self.value_map: dict[Any, float] = {}
        for k, v in vm.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise cfg.err(f"value_map.{k}", "expected a number")
            self.value_map[k] = float(v)
            self.value_map[_label_text(k) if not isinstance(k, str) else k] = float(v)


class JsonOptions(OptionGroup):
    """The adapter's one json source from flags: `--json-url` and the
    `--json-mapping` file holding the rest of its keys."""

    url: str | None = option(
        None, kind="url", help="fetch this JSON document on each scrape (needs --json-mapping)"
    )
    mapping: str | None = option(
        None,
        kind="path",
        help="YAML file: the json source's `metrics:` list (and optionally interval, "
        "timeout, headers, TLS and auth keys)",
    )

    def check(self) -> None:
        if self.mapping and not self.url:
            raise UsageError(f"{self.flag('mapping')}: needs {self.flag('url')}")
        if self.url and not self.mapping:
            raise UsageError(
                f"{self.flag('url')}: needs {self.flag('mapping')} FILE (which values to export)"
            )


@register
class JSONSource(Source):
    type = "json"

    def __init__(self, cfg: Cfg, store: Store, log: Any) -> None:
        super().__init__(cfg, store, log)
        cfg.check_keys(SOURCE_KEYS)
        self.url: str = cfg.text("url", required=True)
        if not self.url.startswith(("http://", "https://")):
            raise cfg.err("url", f"expected an http(s) URL, got {redact_url(self.url)!r}")
        self.name = self.name or redact_url(self.url)
        # The config (logged at start as settings) may carry the URL's password.
        password = urlsplit(self.url).password
        if password:
            register_secret(password)
        self.headers: dict[str, str] = {}
        for k, v in cfg.mapping("headers").items():
            name, value = parse_header(f"{k}: {v}", f"{cfg.where}.headers")
            self.headers[name] = value
        self.interval: float | None = cfg.duration("interval")
        self.timeout: float = cfg.duration("timeout", "5s")
        self.max_body = cfg.size("max_body", "16MiB")
        self.max_series = int(cfg.number("max_series", 10000))
        self.tls: TLSClientOptions = TLSClientOptions.from_mapping(
            cfg.data, cfg.where, base_dir=cfg.base_dir
        )
        self.auth: AuthOptions = AuthOptions.from_mapping(
            cfg.data, cfg.where, base_dir=cfg.base_dir
        )
        specs = cfg.list("metrics", required=True)
        if not specs:
            raise cfg.err("metrics", "at least one metric is needed")
        self.metrics = [MetricSpec(cfg.sub(f"metrics[{i}]", m)) for i, m in enumerate(specs)]
        self.errors = dict.fromkeys(ERROR_REASONS, 0)
        self.up = 0.0
        self.fetches = 0
        self.last_duration = 0.0
        self.last_error: str | None = None
        self._owned: dict[str, tuple[Family, set[tuple[str, ...]]]] = {}
        self._inflight: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._session: Any = None

    async def start(self) -> None:
        try:
            ctx = self.tls.ssl_context() if self.url.startswith("https://") else None
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.cfg.where}: TLS setup: {exc}") from None
        self._session = client_session(self.timeout, ssl_ctx=ctx, headers=self.headers, limit=4)
        if self.interval:
            self._loop_task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if self._session is not None:
            await self._session.close()

    async def _poll(self) -> None:
        while True:
            try:
                await self.fetch()
            except Exception:  # a bug must not end the polling for good
                self.log.exception("json fetch failed", extra={"source": self.name})
            await asyncio.sleep(self.interval or 1.0)

    async def refresh(self) -> None:
        if self.interval:
            return
        await self.fetch()

    async def fetch(self) -> None:
        """Fetch once; concurrent callers share one request."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch())
        await asyncio.shield(self._inflight)

    def _fail(self, reason: str, detail: str) -> None:
        self.errors[reason] += 1
        if self.up or self.last_error != reason:
            self.log.warning(
                "json source failed",
                extra={"source": self.name, "reason": reason, "error": detail},
            )
        self.up = 0.0
        self.last_error = reason
        self.on_error("json", f"{self.name}: {reason}: {detail}")
        self._apply({})

    async def _fetch(self) -> None:
        import aiohttp

        start = time.monotonic()
        self.fetches += 1
        try:
            # Re-read when a file changes (a rotated Secret); a vanished one fails this fetch.
            headers = self.auth.headers() if self.auth.configured else None
        except UsageError as exc:
            self.last_duration = time.monotonic() - start
            self._fail("fetch", str(exc))
            return
        try:
            async with self._session.get(self.url, headers=headers) as resp:
                if not 200 <= resp.status < 300:
                    self._fail("http_status", f"HTTP {resp.status}")
                    return
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > self.max_body:
                        self._fail("too_large", f"body over {self.max_body} bytes")
                        return
        except TimeoutError:
            self._fail("timeout", f"no complete answer within {self.timeout}s")
            return
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            self._fail("fetch", str(exc) or type(exc).__name__)
            return
        except Exception as exc:  # a secret file that vanished, etc.
            self._fail("fetch", str(exc) or type(exc).__name__)
            return
        finally:
            self.last_duration = time.monotonic() - start
        # Parsing and extraction run in a worker thread: a huge document must
        # not stall the event loop (StatsD reads, other sources' timeouts).
        try:
            series = await asyncio.to_thread(self._parse, bytes(body))
        except _BadDocument as exc:
            self._fail("invalid_json", str(exc)[:200])
            return
        if not self.up:
            self.log.info("json source up", extra={"source": self.name})
        self.up = 1.0
        self.last_error = None
        self._apply(series)

    def _parse(self, body: bytes) -> dict[str, tuple[MetricSpec, dict[tuple[str, ...], float]]]:
        try:
            doc = loads_json(body)
        except (ValueError, RecursionError) as exc:
            raise _BadDocument(str(exc) or type(exc).__name__) from None
        try:
            return self.extract(doc)
        except RecursionError:
            raise _BadDocument("document nested too deeply") from None

    def extract(self, doc: Any) -> dict[str, tuple[MetricSpec, dict[tuple[str, ...], float]]]:
        """Series per metric name from one document; errors are counted, never raised."""
        out: dict[str, tuple[MetricSpec, dict[tuple[str, ...], float]]] = {}
        for spec in self.metrics:
            missing: list[str] = []
            matches = spec.path.find(doc, missing)
            self.errors["missing"] += len(missing)
            if not matches and not missing and not spec.path.has_wildcard(len(spec.path.steps)):
                self.errors["missing"] += 1
            entry = out.setdefault(spec.name, (spec, {}))
            if entry[0].labelnames != spec.labelnames:
                self.errors["conflict"] += 1
                continue
            values = entry[1]
            named = spec.name_template is not None
            taken = 0  # series of this metric, whatever names they got
            full = False
            for m in matches:
                if full:
                    break
                if spec.each == "key":
                    if not isinstance(m.value, dict):
                        self.errors["not_numeric"] += 1
                        continue
                    items = [(Match(v, m.value, k, m), k, v) for k, v in m.value.items()]
                else:
                    items = [(m, m.key, m.value if spec.value else m.parent)]
                for node, key, item in items:
                    if taken >= self.max_series:
                        # Counted once per metric and fetch: the rest is cut off.
                        self.errors["too_many_series"] += 1
                        full = True
                        break
                    raw = node.value
                    if spec.value is not None:
                        raw = spec.value.first(node.value)
                        if absent(raw):
                            self.errors["missing"] += 1
                            continue
                    num = to_number(raw, spec.value_map)
                    if num is None:
                        self.errors["not_numeric"] += 1
                        continue
                    try:
                        lv = tuple(t.render(doc, node, key, item) for t in spec.labels)
                    except _Missing:
                        self.errors["missing_label"] += 1
                        continue
                    if named:
                        assert spec.name_template is not None
                        try:
                            name = escape_name(spec.name_template.render(doc, node, key, item))
                        except _Missing:
                            self.errors["missing_label"] += 1
                            continue
                        if not valid_name(name):
                            self.errors["conflict"] += 1
                            continue
                        e = out.setdefault(name, (spec, {}))
                        if e[0].labelnames != spec.labelnames:
                            self.errors["conflict"] += 1
                            continue
                        values = e[1]
                    if lv in values:
                        self.errors["duplicate"] += 1
                        continue
                    values[lv] = num
                    taken += 1
        return out

    def _apply(self, series: dict[str, tuple[MetricSpec, dict[tuple[str, ...], float]]]) -> None:
        store = self.store
        now = time.monotonic()
        owned: dict[str, tuple[Family, set[tuple[str, ...]]]] = {}
        for name, (spec, values) in series.items():
            if not values:
                continue
            try:
                fam = store.family(
                    name, spec.kind, spec.labelnames, spec.help, source=f"json {self.name}"
                )
            except Conflict:
                self.errors["conflict"] += len(values)
                continue
            keys = set()
            for lv, v in values.items():
                s = fam.get(lv, now)
                if s is None:  # the store's series limit (counted there)
                    continue
                s.value = v
                s.updated = now
                keys.add(lv)
            owned[fam.name] = (fam, keys)
        for fname, (fam, old) in self._owned.items():
            keep = owned.get(fname, (None, set()))[1]
            for lv in old - keep:
                store.remove_series(fam, lv)
        self._owned = owned

    def own(self, emit: Emit) -> None:
        src = (self.name,)
        emit(
            "source_up", "gauge", "1 when the source's last read worked.", ("source",), src, self.up
        )
        for reason, n in self.errors.items():
            emit(
                "json_errors",
                "counter",
                "JSON fetch failures and series skipped, by reason.",
                ("source", "reason"),
                (self.name, reason),
                n,
            )
        emit(
            "json_fetch_duration_seconds",
            "gauge",
            "How long the last fetch took.",
            ("source",),
            src,
            self.last_duration,
        )

    def status(self) -> dict[str, Any]:
        return {
            "type": "json",
            "name": self.name,
            "url": redact_url(self.url),
            "up": bool(self.up),
            "fetches": self.fetches,
            "last_error": self.last_error,
            "mode": f"every {self.interval}s" if self.interval else "on scrape",
        }
