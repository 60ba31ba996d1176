"""The pod's identity from the Downward API, without a Kubernetes client.

Environment variables (set with `fieldRef` in the pod spec) give the names,
and a `downwardAPI` volume (default `/etc/podinfo`) gives the pod's `labels`
and `annotations` files, one `key="value"` per line (the value quoted as Go's
strconv.Quote does). Both are optional: what is missing is left out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

#: (environment variable, record label, OpenTelemetry resource attribute).
POD_ENV = (
    ("POD_NAMESPACE", "namespace", "k8s.namespace.name"),
    ("POD_NAME", "pod", "k8s.pod.name"),
    ("NODE_NAME", "node", "k8s.node.name"),
    ("CONTAINER_NAME", "container", "k8s.container.name"),
)
DEFAULT_DIR = "/etc/podinfo"
#: An annotation value longer than this is left out of records (kubectl's
#: last-applied-configuration would otherwise ride along with every line).
MAX_ANNOTATION_BYTES = 1024
#: A downward API file larger than this is not a labels file; it is ignored.
MAX_FILE_BYTES = 256 * 1024


@dataclass
class PodInfo:
    names: dict[str, str] = field(default_factory=dict)  # record label -> value
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def resource(self) -> dict[str, str]:
        """OpenTelemetry resource attributes (k8s semantic conventions)."""
        attr = {label: otel for _, label, otel in POD_ENV}
        out = {attr[k]: v for k, v in self.names.items()}
        out.update({f"k8s.pod.label.{k}": v for k, v in self.labels.items()})
        out.update({f"k8s.pod.annotation.{k}": v for k, v in self.annotations.items()})
        return out


def parse_downward_file(text: str) -> dict[str, str]:
    """`key="value"` lines as the kubelet writes them; other lines are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or not key:
            continue
        raw = raw.strip()
        try:
            value = json.loads(raw)  # Go's quoting is JSON's for everything but \x, \a, \v
        except ValueError:
            value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
        out[key.strip()] = value if isinstance(value, str) else raw
    return out


def _read(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError:
        return {}
    if len(data) > MAX_FILE_BYTES:
        return {}
    return parse_downward_file(data.decode("utf-8", "replace"))


def read_podinfo(directory: str | None, env: dict[str, str] | None = None) -> PodInfo:
    env = os.environ if env is None else env  # type: ignore[assignment]
    assert env is not None
    info = PodInfo()
    for var, label, _ in POD_ENV:
        if env.get(var):
            info.names[label] = env[var]
    if directory:
        info.labels = _read(os.path.join(directory, "labels"))
        info.annotations = {
            k: v
            for k, v in _read(os.path.join(directory, "annotations")).items()
            if len(v.encode()) <= MAX_ANNOTATION_BYTES
        }
    return info
