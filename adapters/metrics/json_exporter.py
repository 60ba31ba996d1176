"""json_exporter's config file and multi-target pattern: `GET /probe?module=&target=`.

A json_exporter user brings their `modules:` file as is. Each module's
metrics are evaluated the way json_exporter evaluates them:

- `path`, label values and `values` are kubectl-style JSONPath templates
  (`{.items[*].name}`, `planet-{.location}`), converted to podkit's JSONPath
  engine: each `{expr}` becomes `$expr` evaluated against the current data
  (the document for `type: value`, each selected object for `type: object`);
  text around it is kept;
- `type: value` (default): one series, labels from the document;
  `type: object`: `path` selects objects, each gives one series per entry of
  `values` (named `<name>_<key>`), labels and values from that object;
- `valuetype`: `untyped` (default), `gauge`, `counter`;
- values convert as json_exporter's SanitizeValue: a number, Go's
  ParseBool words (true/false, 1/0, t/f, ...), `null` as NaN;
- `epochTimestamp` (or `epochtimestamp`): an integer in milliseconds
  (json_exporter passes it to time.UnixMilli), from the same data as the
  labels; a missing or bad one leaves the sample without a timestamp;
- `allow_missing_key`: a missing path skips the metric quietly;
- per module: `headers`, `http_client_config` (`basic_auth` with `password`
  or `password_file`, `bearer_token`, `bearer_token_file`, `tls_config`
  `insecure_skip_verify`, `ca_file`, `cert_file`, `key_file`),
  `valid_status_codes`, and `body` (`content`, sent with POST; with
  `templatize: true` the Go-template forms `{{ .param }}`,
  `{{ .param | first }}` and `{{ index .param 0 }}` take the probe's query
  parameters; other template actions are refused at start).

Anything else in the file is refused at start (exit 2, naming the key).
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

from podkit import OptionGroup, SecretFile, UsageError, configfile, option, register_secret
from podkit._http1 import loads_json
from podkit.http import bearer_token_problem

from .exposition import _escape_help, _labelstr, fmt_value
from .jsonpath import JSONPath, PathError, absent
from .series import COUNTER, GAUGE, UNTYPED
from .store import valid_label, valid_name

MODULE_KEYS = ("headers", "metrics", "http_client_config", "body", "valid_status_codes")
METRIC_KEYS = (
    "name",
    "path",
    "labels",
    "type",
    "valuetype",
    "epochTimestamp",
    "epochtimestamp",
    "help",
    "values",
    "allow_missing_key",
)
HTTP_KEYS = ("basic_auth", "bearer_token", "bearer_token_file", "tls_config")
TLS_KEYS = ("insecure_skip_verify", "ca_file", "cert_file", "key_file")
_EXPR = re.compile(r"\{([^{}]*)\}")
_GO_TEMPLATE = re.compile(r"\{\{\s*(?:\.(\w+)(\s*\|\s*first)?|index\s+\.(\w+)\s+0)\s*\}\}")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class _Missing(Exception):
    pass


def _go_text(v: Any) -> str:
    """How kubectl's JSONPath prints a value of the document: Go's %v of the
    decoded JSON, where every number is a float64 (so 1234567 prints as
    1.234567e+06, which ParseInt refuses: json_exporter then serves no
    timestamp, and a label shows that text)."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        try:
            return go_float(float(v))
        except OverflowError:
            return str(v)
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def go_float(f: float) -> str:
    """Go's %v of a float64 (strconv 'g', shortest): exponent form when the
    decimal exponent is below -4 or at least 6 (`1e+06`, `1e-05`), else plain."""
    if f != f:
        return "NaN"
    if f in (math.inf, -math.inf):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    d = Decimal(repr(f)).normalize()
    sign, digits, _ = d.as_tuple()
    text = "".join(map(str, digits))
    exp = d.adjusted()
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mant = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{neg}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if exp >= 0:
        whole, frac = text[: exp + 1].ljust(exp + 1, "0"), text[exp + 1 :]
    else:
        whole, frac = "0", "0" * (-exp - 1) + text
    return neg + whole + ("." + frac if frac else "")


def _yaml_text(v: Any) -> str:
    """A config scalar as Go's yaml.v2 decodes it into a string field."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class KubeTemplate:
    """A kubectl JSONPath template: text with `{expr}` parts."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.parts: list[str | JSONPath] = []
        pos = 0
        try:
            for m in _EXPR.finditer(text):
                self.parts.append(text[pos : m.start()])
                self.parts.append(kube_path(m.group(1)))
                pos = m.end()
        except PathError as exc:
            raise UsageError(f"{where}: {exc}") from None
        self.parts.append(text[pos:])
        self.parts = [p for p in self.parts if p != ""]

    @property
    def static(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def values(self, data: Any) -> list[Any]:
        """Every match of every expression (kubectl prints them space-separated)."""
        out: list[Any] = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            else:
                found = [m.value for m in p.find(data)]
                if not found:
                    raise _Missing
                out.extend(found)
        return out

    def render(self, data: Any) -> str:
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            found = [m.value for m in p.find(data)]
            if not found:
                raise _Missing
            out.append(" ".join(_go_text(v) for v in found))
        return "".join(out)


def kube_path(expr: str) -> JSONPath:
    """`.items[*].name` or `[*]` (kubectl) -> `$.items[*].name` (podkit's engine)."""
    e = expr.strip()
    if e.startswith("$"):
        return JSONPath(e)
    if e.startswith(("range", "end")) or not e.startswith((".", "[")):
        raise PathError(f"unsupported kubectl JSONPath {{{expr}}}: only paths like {{.a.b[*]}}")
    return JSONPath("$" + e)


def sanitize_value(v: Any) -> float | None:
    """json_exporter's SanitizeValue, from the decoded JSON value."""
    if v is None:
        return math.nan
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        try:
            return float(v)
        except OverflowError:  # an integer past float's range: infinite, as 1e999 is
            return math.inf if v > 0 else -math.inf
    s = _go_text(v)
    try:
        return float(s)
    except ValueError:
        pass
    if s in _TRUE:
        return 1.0
    if s in _FALSE:
        return 0.0
    return None


class ProbeMetric:
    """One json_exporter metric, expanded (object metrics: one per value key)."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: expected a mapping")
        for k in raw:
            if k not in METRIC_KEYS:
                raise UsageError(f"{where}.{k}: unknown key")
        self.name = str(raw.get("name") or "")
        if not self.name:
            raise UsageError(f"{where}.name: required")
        self.type = raw.get("type") or "value"
        if self.type not in ("value", "object"):
            raise UsageError(
                f"{where}.type: unknown metric type: '{self.type}', for metric: '{self.name}'"
            )
        vt = raw.get("valuetype") or UNTYPED
        if vt not in (UNTYPED, GAUGE, COUNTER):
            raise UsageError(f"{where}.valuetype: {vt!r} is not gauge, counter or untyped")
        self.kind = vt
        self.help = str(raw.get("help") or self.name)
        self.path = KubeTemplate(str(raw.get("path") or ""), f"{where}.path")
        if self.path.static:
            raise UsageError(f"{where}.path: expected a JSONPath like '{{.a.b}}'")
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict):
            raise UsageError(f"{where}.labels: expected a mapping")
        for k in labels:
            if not isinstance(k, str) or not valid_label(k):
                raise UsageError(f"{where}.labels: {k!r} is not a valid label name")
        self.labelnames = tuple(sorted(labels))
        self.labels = [KubeTemplate(str(labels[k]), f"{where}.labels.{k}") for k in self.labelnames]
        ts = raw.get("epochTimestamp", raw.get("epochtimestamp"))
        self.timestamp = KubeTemplate(str(ts), f"{where}.epochTimestamp") if ts else None
        self.allow_missing = bool(raw.get("allow_missing_key", False))
        values = raw.get("values") or {}
        if not isinstance(values, dict):
            raise UsageError(f"{where}.values: expected a mapping")
        if self.type == "object" and not values:
            raise UsageError(f"{where}.values: an object metric needs values")
        #: (series name, value template) per value; a value metric has one.
        self.outputs: list[tuple[str, KubeTemplate | None]] = (
            [(self.name, None)]
            if self.type == "value"
            else [
                (f"{self.name}_{k}", KubeTemplate(_yaml_text(v), f"{where}.values.{k}"))
                for k, v in values.items()
            ]
        )
        for name, _ in self.outputs:
            if not valid_name(name):
                raise UsageError(f"{where}.name: {name!r} is not a valid metric name")


class Module:
    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: expected a mapping")
        for k in raw:
            if k not in MODULE_KEYS:
                raise UsageError(f"{where}.{k}: unknown key")
        self.headers = {str(k): str(v) for k, v in (raw.get("headers") or {}).items()}
        metrics = raw.get("metrics") or []
        if not isinstance(metrics, list):
            raise UsageError(f"{where}.metrics: expected a list")
        self.metrics = [ProbeMetric(m, f"{where}.metrics[{i}]") for i, m in enumerate(metrics)]
        codes = raw.get("valid_status_codes") or []
        if not isinstance(codes, list) or not all(isinstance(c, int) for c in codes):
            raise UsageError(f"{where}.valid_status_codes: expected a list of numbers")
        self.valid_status_codes = set(codes)
        body = raw.get("body") or {}
        if not isinstance(body, dict) or set(body) - {"content", "templatize"}:
            raise UsageError(f"{where}.body: expected content and templatize")
        self.body: str = str(body.get("content") or "")
        self.templatize = bool(body.get("templatize", False))
        if self.templatize:
            rest = _GO_TEMPLATE.sub("", self.body)
            if "{{" in rest:
                raise UsageError(
                    f"{where}.body.content: only {{{{ .param }}}}, {{{{ .param | first }}}} "
                    "and {{ index .param 0 }} are supported in templates"
                )
        self._http(raw.get("http_client_config") or {}, f"{where}.http_client_config")

    def _http(self, cfg: Any, where: str) -> None:
        if not isinstance(cfg, dict):
            raise UsageError(f"{where}: expected a mapping")
        for k in cfg:
            if k not in HTTP_KEYS:
                raise UsageError(f"{where}.{k}: not supported by podkit")
        self.auth: tuple[str, str] | None = None
        self.bearer: str | None = None
        self.bearer_file: str | None = cfg.get("bearer_token_file")
        self.password_secret: SecretFile | None = None
        ba = cfg.get("basic_auth")
        if ba is not None:
            if not isinstance(ba, dict) or set(ba) - {"username", "password", "password_file"}:
                raise UsageError(f"{where}.basic_auth: username and password or password_file")
            password = ba.get("password")
            if ba.get("password_file"):
                # read again for each probe when it changes, as bearer_token_file
                self.password_secret = SecretFile(ba["password_file"])
                try:
                    password = self.password_secret.value()
                except OSError as exc:
                    raise UsageError(f"{where}.basic_auth.password_file: {exc}") from None
            if password:
                register_secret(str(password))
            self.auth = (str(ba.get("username") or ""), str(password or ""))
        # the file is re-read when it changes (a rotated Secret), and what it holds
        # is scrubbed from the logs like every secret read from a file
        self.bearer_secret = SecretFile(self.bearer_file) if self.bearer_file else None
        if cfg.get("bearer_token"):
            self.bearer = str(cfg["bearer_token"])
            register_secret(self.bearer)
            problem = bearer_token_problem(self.bearer)
            if problem:
                raise UsageError(f"{where}.bearer_token: {problem}")
        tls = cfg.get("tls_config") or {}
        if not isinstance(tls, dict):
            raise UsageError(f"{where}.tls_config: expected a mapping")
        for k in tls:
            if k not in TLS_KEYS:
                raise UsageError(f"{where}.tls_config.{k}: not supported by podkit")
        self.insecure = bool(tls.get("insecure_skip_verify", False))
        self.ca_file = tls.get("ca_file")
        self.cert_file = tls.get("cert_file")
        self.key_file = tls.get("key_file")

    def credentials(self) -> tuple[str | None, tuple[str, str] | None]:
        """The bearer token and the basic-auth pair for one probe, the files read
        again when they changed; ValueError says which file cannot be used."""
        bearer = self.bearer
        if self.bearer_secret is not None:
            bearer = _read(self.bearer_secret, "bearer_token_file")
            problem = bearer_token_problem(bearer)
            if problem:
                raise ValueError(f"bearer_token_file {self.bearer_file}: {problem}")
        auth = self.auth
        if auth is not None and self.password_secret is not None:
            auth = (auth[0], _read(self.password_secret, "password_file"))
        return bearer, auth

    def render_body(self, query: dict[str, list[str]]) -> str:
        if not self.templatize:
            return self.body

        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(3)
            vals = query.get(name) or []
            if m.group(1) and not m.group(2):
                # `{{ .param }}` prints Go's %v of the []string: [a b]
                return "[" + " ".join(vals) + "]"
            return vals[0] if vals else ""

        return _GO_TEMPLATE.sub(sub, self.body)

    def collect(self, doc: Any) -> tuple[str, int]:
        """The exposition text for one document, and how many series were skipped.
        Each family's samples are kept together (an object metric yields its
        value families interleaved, object by object)."""
        fams: dict[str, list[str]] = {}
        kinds: dict[str, tuple[str, tuple[str, ...]]] = {}
        done: set[tuple[str, tuple[str, ...]]] = set()
        skipped = 0
        for m in self.metrics:
            try:
                rows = self._rows(m, doc)
            except _Missing:
                if not m.allow_missing:
                    skipped += 1
                continue
            for name, lv, value, ts in rows:
                # Counters are served with `_total`, as everywhere in the adapter
                # (text format: HELP and TYPE name the sample).
                sname = name if m.kind != COUNTER or name.endswith("_total") else name + "_total"
                lines = fams.get(sname)
                if lines is None:
                    kinds[sname] = (m.kind, m.labelnames)
                    help = _escape_help(m.help, False)
                    lines = fams[sname] = [f"# HELP {sname} {help}\n# TYPE {sname} {m.kind}\n"]
                if kinds[sname] != (m.kind, m.labelnames) or (sname, lv) in done:
                    # Another type or label set, or the same series twice: the
                    # first one wins (json_exporter would fail the probe).
                    skipped += 1
                    continue
                done.add((sname, lv))
                ls = _labelstr(m.labelnames, lv)
                sample = f"{sname}{{{ls}}}" if ls else sname
                stamp = f" {ts}" if ts is not None else ""
                lines.append(f"{sample} {fmt_value(value)}{stamp}\n")
        return "".join("".join(lines) for lines in fams.values()), skipped

    def _rows(
        self, m: ProbeMetric, doc: Any
    ) -> list[tuple[str, tuple[str, ...], float, int | None]]:
        if m.type == "value":
            found = m.path.values(doc)
            if len(found) != 1:
                return []
            v = sanitize_value(found[0])
            if v is None:
                return []
            return [(m.name, self._labels(m, doc), v, self._ts(m, doc))]
        rows = []
        for obj in m.path.values(doc):
            try:
                lv = self._labels(m, obj)
            except _Missing:
                continue
            for name, tpl in m.outputs:
                assert tpl is not None
                try:
                    found = tpl.values(obj)
                except _Missing:
                    continue
                v = sanitize_value(found[0]) if len(found) == 1 else None
                if v is not None:
                    rows.append((name, lv, v, self._ts(m, obj)))
        return rows

    @staticmethod
    def _labels(m: ProbeMetric, data: Any) -> tuple[str, ...]:
        # json_exporter leaves a label it cannot extract empty.
        out = []
        for t in m.labels:
            try:
                out.append(t.render(data))
            except _Missing:
                out.append("")
        return tuple(out)

    @staticmethod
    def _ts(m: ProbeMetric, data: Any) -> int | None:
        if m.timestamp is None:
            return None
        try:
            found = m.timestamp.values(data)
        except _Missing:
            return None
        v = found[0] if len(found) == 1 else None
        if isinstance(v, bool) or absent(v) or v is None:
            return None
        if isinstance(v, int | float) and float(v).is_integer():
            # Deliberately past json_exporter: its Go prints a JSON number of
            # milliseconds as 1.7e+12, which its ParseInt refuses, so only a
            # timestamp written as a string ever worked there.
            return int(v)
        try:
            return int(_go_text(v))  # ParseInt: an integer, in milliseconds
        except ValueError:
            return None


class ProbeOptions(OptionGroup):
    """json_exporter's mode: its config file and how long a probe may take."""

    json_exporter_config: str | None = option(
        None,
        kind="path",
        help="json_exporter's config file (modules:); serves GET /probe?module=NAME&target=URL",
    )
    probe_timeout: float = option("10s", kind="duration", help="whole-request timeout of a probe")

    def prober(self) -> Prober | None:
        """The prober for GET /probe, its modules loaded; None without a config file."""
        if not self.json_exporter_config:
            return None
        modules = load_modules(self.json_exporter_config, self.flag("json_exporter_config"))
        return Prober(modules, self.probe_timeout, MAX_PROBE_BODY)


#: Largest document a probe reads.
MAX_PROBE_BODY = 16 * 1024 * 1024


def _read(secret: SecretFile, key: str) -> str:
    try:
        return secret.value()
    except OSError as exc:
        raise ValueError(f"Failed to read {key}: {exc}") from None


class Prober:
    """Serves `GET /probe?module=NAME&target=URL` as json_exporter does: fetch
    the target with the module's HTTP settings, answer with that target's
    series only (400 for an unknown module or no target, 503 when the fetch
    fails)."""

    def __init__(self, modules: dict[str, Module], timeout: float, max_body: int) -> None:
        self.modules = modules
        self.timeout = timeout
        self.max_body = max_body
        self.probes = 0
        self.failures = 0
        self.skipped = 0

    async def probe(self, query: dict[str, list[str]]) -> tuple[int, str]:
        import aiohttp

        from podkit.http import client_session, ssl_context

        name = (query.get("module") or ["default"])[0] or "default"
        mod = self.modules.get(name)
        if mod is None:
            return 400, f"Unknown module {name!r}\n"
        target = (query.get("target") or [""])[0]
        if not target:
            return 400, "Target parameter is missing\n"
        if not target.startswith(("http://", "https://")):
            target = "http://" + target
        self.probes += 1
        headers = dict(mod.headers)
        headers.setdefault("Accept", "application/json")
        try:
            bearer, basic = mod.credentials()
        except ValueError as exc:
            self.failures += 1
            return 503, f"{exc}\n"
        if bearer:
            headers["Authorization"] = "Bearer " + bearer
        ctx = None
        if target.startswith("https://"):
            ctx = ssl_context(mod.ca_file, mod.insecure, mod.cert_file, mod.key_file)
        body = mod.render_body(query)
        auth = aiohttp.BasicAuth(*basic) if basic else None
        try:
            async with (
                client_session(self.timeout, ssl_ctx=ctx, limit=1) as session,
                session.request(
                    "POST" if body else "GET",
                    target,
                    data=body.encode() if body else None,
                    headers=headers,
                    auth=auth,
                ) as resp,
            ):
                ok = (
                    resp.status in mod.valid_status_codes
                    if mod.valid_status_codes
                    else 200 <= resp.status < 300
                )
                if not ok:
                    raise ValueError(f"{resp.status} {resp.reason}")
                data = await resp.content.read(self.max_body + 1)
                if len(data) > self.max_body:
                    raise ValueError(f"body over {self.max_body} bytes")
            doc = loads_json(data)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, RecursionError) as exc:
            self.failures += 1
            return 503, (
                f"Failed to fetch JSON response. TARGET: {target}, ERROR: "
                f"{exc or type(exc).__name__}\n"
            )
        text, skipped = mod.collect(doc)
        self.skipped += skipped
        return 200, text


def load_modules(path: str, flag: str) -> dict[str, Module]:
    cfg = configfile.load(path, flag)
    data = cfg.data
    with cfg.located():
        if not isinstance(data, dict) or set(data) - {"modules"}:
            raise UsageError(": expected a mapping with 'modules:' only")
        mods = data.get("modules") or {}
        if not isinstance(mods, dict):
            raise UsageError("modules: expected a mapping")
        return {str(k): Module(v, f"modules.{k}") for k, v in mods.items()}
