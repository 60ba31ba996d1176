"""`podkit inject FILE|DIR|-`: add podkit programs to workloads, by annotation.

The toil Linkerd, Istio, Dapr and Vault remove with injection, for podkit: a
pod template annotated `podkit.dev/<program>: "<args>"` gets that program as a
container set up the way a careful operator would write it by hand:

- a native sidecar (`initContainers` with `restartPolicy: Always`) for a
  sidecar, adapter or ambassador; a plain init container for an init task
  (waitfor) or a program run with `--one-time`; classic sidecars in
  `containers` with `--classic` (clusters before 1.29);
- `startupProbe` on `/readyz` and `livenessProbe` on `/healthz` at the
  admin port, the admin server on `0.0.0.0` (the image's own env, `image_env`);
- a locked-down security context, resources from the measured RSS, a private
  `emptyDir` at `/tmp` (state, checkpoints);
- the volumes the program's paths live on: the app container's volume that
  covers the path, mounted at the same place (read-only unless the program
  writes there), or else a new `emptyDir` mounted in both.

The args are checked with the program's own option parser. Injecting twice
changes nothing: a program whose container (`podkit-<program>`) is already in
the pod is skipped, and `podkit.dev/injected` lists what was injected.

The same code serves `podkit injector`, the mutating admission webhook
(`pod_patch`).
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import __version__
from .options import UsageError, split_addr
from .program import InitTask, Program
from .validate import IMAGE, LOOPBACK, _files, _paths, _programs, image_env

PREFIX = "podkit.dev/"
#: The annotation that lists the injected programs (and marks the pod as done).
INJECTED = PREFIX + "injected"
#: Annotation keys under podkit.dev/ that are not programs.
RESERVED = {INJECTED}
#: What `--registry` is when not given: the placeholder the examples use too.
DEFAULT_REGISTRY = "REGISTRY"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
#: The images' user (images/Dockerfile).
UID = 65532

#: Memory request and limit (MiB) per program: the request is the measured
#: idle RSS (docs/images.md: 22-29 MiB) with headroom, the limit the peak seen
#: in docs/benchmarks.md under load (logship 56 MiB shipping 1M lines, metrics
#: up to 192 MB with a full StatsD series budget, gitsync's git children).
MEMORY_MIB: dict[str, tuple[int, int]] = {
    "waitfor": (32, 64),
    "logship": (48, 128),
    "gitsync": (48, 256),
    "reloader": (40, 96),
    "metrics": (48, 192),
    "logformat": (48, 128),
    "proxy": (48, 128),
    "injector": (48, 128),
    "kubefiles": (48, 96),  # 33.4 MB idle with 1,000 objects (docs/kubefiles.md)
}
#: A program registered by a third party: nothing was measured, so room.
OTHER_MEMORY_MIB = (64, 256)
#: Idle programs use next to no CPU; the limit keeps a runaway off the app's share.
CPU = ("10m", "500m")
#: Options a program writes to (the rest it only reads): their volume is read-write.
WRITES = {"root", "state_dir", "dead_letter", "touch_file", "statsd_listen_unixgram", "folder"}
#: Options that name a directory (the rest name files or globs).
DIRS = {"root", "state_dir", "folder"}


class InjectError(Exception):
    """An annotation that cannot be honoured; the message names workload and key."""


@dataclass
class Settings:
    registry: str = DEFAULT_REGISTRY
    version: str = __version__
    classic: bool = False


def pod_templates(doc: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template: metadata + spec) of every pod a document describes."""
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    name = f"{kind}/{(doc.get('metadata') or {}).get('name', '?')}"
    spec = doc.get("spec")
    if kind == "List":
        for item in doc.get("items") or []:
            yield from pod_templates(item)
    elif kind == "Pod" and isinstance(spec, dict):
        yield name, doc
    elif kind in WORKLOADS and isinstance(spec, dict):
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            yield name, template
    elif kind == "CronJob" and isinstance(spec, dict):
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        template = job.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            yield name, template


def requested(template: dict[str, Any]) -> list[tuple[str, str]]:
    """(program, args) of every podkit.dev/<program> annotation, in key order."""
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return [
        (key[len(PREFIX) :], str(value))
        for key, value in sorted(annotations.items())
        if key.startswith(PREFIX) and key not in RESERVED
    ]


def parse(
    where: str, program: str, value: str, programs: dict[str, type[Program]]
) -> tuple[type[Program], list[str], Program]:
    """The class, args and configured instance for one annotation, or InjectError."""
    from .runner import configure

    key = f"{where}: annotation {PREFIX}{program}"
    cls = programs.get(program)
    if cls is None:
        known = ", ".join(sorted(programs))
        raise InjectError(f"{key}: no podkit program {program!r} is installed (known: {known})")
    try:
        args = shlex.split(value)
    except ValueError as exc:
        raise InjectError(f"{key}: cannot split the args: {exc}") from None
    # They print and exit, which a webhook must not do (and they start nothing).
    asks = [a for a in args if a in ("-h", "--help", "--version")]
    if asks:
        raise InjectError(f"{key}: {asks[0]} is not an arg for a container")
    try:
        instance = configure(cls, args, image_env(cls), validate=False)
    except UsageError as exc:
        raise InjectError(f"{key}: {exc}") from None
    except SystemExit:  # argparse's own errors print and exit; --help exits too
        raise InjectError(
            f"{key}: args {value!r} do not parse (see podkit help {program})"
        ) from None
    addr = instance.admin_addr or "off"
    if addr != "off" and split_addr(addr)[0].startswith(LOOPBACK):
        raise InjectError(
            f"{key}: --admin-addr {addr} is loopback only: the kubelet probes the pod IP"
        )
    return cls, args, instance


def inject_template(
    where: str,
    template: dict[str, Any],
    programs: dict[str, type[Program]],
    settings: Settings,
) -> list[str]:
    """Add the annotated programs to one pod template, in place. Returns their
    names (empty when there was nothing to do). All annotations are checked
    before anything changes, so an error leaves the template as it was."""
    wanted = [(p, *parse(where, p, v, programs)) for p, v in requested(template)]
    present = {
        c.get("name")
        for key in ("initContainers", "containers")
        for c in template["spec"].get(key) or []
        if isinstance(c, dict)
    }
    todo = [w for w in wanted if container_name(w[0]) not in present]
    if not todo:
        return []
    # On a copy: a path that cannot be shared must not leave half an injection.
    new = copy.deepcopy(template)
    spec = new["spec"]
    apps = [
        c
        for c in spec.get("containers") or []
        if isinstance(c, dict) and not IMAGE.search(str(c.get("image", "")))
    ]
    volumes: list[dict[str, Any]] = spec.setdefault("volumes", [])
    natives, plain, classic = [], [], []
    for program, cls, args, instance in todo:
        c = container(program, cls, args, instance, settings)
        c["volumeMounts"] = mounts(where, program, instance, apps, volumes)
        if issubclass(cls, InitTask) or getattr(instance, "one_time", False):
            plain.append(c)
        elif settings.classic:
            classic.append(c)
        else:
            c["restartPolicy"] = "Always"
            natives.append(c)
    # Native sidecars first: an init container after them (waitfor through the
    # proxy ambassador, a migration shipping its logs) may use them.
    if natives or plain:
        spec["initContainers"] = [*natives, *plain, *(spec.get("initContainers") or [])]
    if classic:
        spec["containers"] = [*(spec.get("containers") or []), *classic]
    annotations = new.setdefault("metadata", {}).setdefault("annotations", {})
    done = set(filter(None, str(annotations.get(INJECTED, "")).split(",")))
    annotations[INJECTED] = ",".join(sorted(done | {p for p, *_ in todo}))
    template.clear()
    template.update(new)
    return [p for p, *_ in todo]


def container_name(program: str) -> str:
    return f"podkit-{program}"


def container(
    program: str, cls: type[Program], args: list[str], instance: Program, settings: Settings
) -> dict[str, Any]:
    request, limit = MEMORY_MIB.get(program, OTHER_MEMORY_MIB)
    c: dict[str, Any] = {
        "name": container_name(program),
        "image": f"{settings.registry}/podkit-{program}:{settings.version}",
        "args": args,
        "env": [{"name": k, "value": v} for k, v in image_env(cls).items()],
    }
    addr = instance.admin_addr or "off"
    plain = issubclass(cls, InitTask) or getattr(instance, "one_time", False)
    # A plain init container may have no probes (the API refuses them).
    if addr != "off" and not plain:
        port = split_addr(addr)[1]
        c["ports"] = [{"containerPort": port, "protocol": "TCP"}]
        # The app (after a native sidecar) starts once the program is ready.
        c["startupProbe"] = {
            "httpGet": {"path": "/readyz", "port": port},
            "periodSeconds": 1,
            "timeoutSeconds": 2,
            "failureThreshold": 60,
        }
        # Patient: a loaded node answers slowly, and a restart costs more.
        c["livenessProbe"] = {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 20,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        }
    c["resources"] = {
        "requests": {"cpu": CPU[0], "memory": f"{request}Mi"},
        "limits": {"cpu": CPU[1], "memory": f"{limit}Mi"},
    }
    c["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return c


def mounts(
    where: str,
    program: str,
    instance: Program,
    apps: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The program's volumeMounts: /tmp, then one per path it is given."""
    own: list[dict[str, Any]] = []
    tmp = f"podkit-{program}-tmp"
    _add_volume(volumes, tmp, {"sizeLimit": "64Mi"})
    own.append({"name": tmp, "mountPath": "/tmp"})
    n = 0
    for flag, path in _paths(instance):
        name = flag.lstrip("-").replace("-", "_")
        fixed = path.split("*")[0].split("?")[0].split("[")[0]
        writes = name in WRITES
        mine = _covering(own, fixed)
        if mine is not None:
            if writes:
                mine.pop("readOnly", None)
            continue
        found = next((m for a in apps if (m := _covering(a.get("volumeMounts"), fixed))), None)
        if found is not None:
            m = {k: found[k] for k in ("name", "mountPath", "subPath") if k in found}
            if not writes:
                m["readOnly"] = True
            own.append(m)
            continue
        # No app container has it: a new emptyDir, shared with every app container.
        if fixed != path:  # a glob: the directory its fixed part is in
            directory = fixed.rsplit("/", 1)[0]
        elif name in DIRS:
            directory = path.rstrip("/")
        else:
            directory = path.rsplit("/", 1)[0]
        if not directory:
            raise InjectError(
                f"{where}: annotation {PREFIX}{program}: {flag} {path}: "
                "cannot share the root directory; name a file in a directory"
            )
        n += 1
        vol = f"podkit-{program}-{n}"
        _add_volume(volumes, vol, {"sizeLimit": "1Gi"})
        m = {"name": vol, "mountPath": directory}
        if not writes:
            m["readOnly"] = True
        own.append(m)
        for a in apps:
            a.setdefault("volumeMounts", []).append({"name": vol, "mountPath": directory})
    return own


def _covering(mounts: Any, path: str) -> dict[str, Any] | None:
    """The mount with the longest mountPath that contains `path`."""
    best: dict[str, Any] | None = None
    for m in mounts or []:
        root = str(m.get("mountPath", "")).rstrip("/") + "/"
        if (path.rstrip("/") + "/").startswith(root) and (
            best is None or len(root) > len(str(best["mountPath"]).rstrip("/")) + 1
        ):
            best = m
    return best


def _add_volume(volumes: list[dict[str, Any]], name: str, empty_dir: dict[str, Any]) -> None:
    if not any(v.get("name") == name for v in volumes):
        volumes.append({"name": name, "emptyDir": empty_dir})


# -- documents -----------------------------------------------------------------


def inject_docs(
    docs: list[Any], programs: dict[str, type[Program]], settings: Settings, source: str = ""
) -> list[Any]:
    """Inject into every pod template of `docs` (in place), or raise InjectError
    listing every problem of every document at once."""
    errors: list[str] = []
    for doc in docs:
        for where, template in pod_templates(doc):
            try:
                inject_template(f"{source}{where}", template, programs, settings)
            except InjectError as exc:
                errors.append(str(exc))
    if errors:
        raise InjectError("\n".join(errors))
    return docs


def inject_text(
    text: str, programs: dict[str, type[Program]] | None = None, settings: Settings | None = None
) -> str:
    """A YAML stream with the annotated programs injected."""
    import yaml

    docs = list(yaml.safe_load_all(text))
    inject_docs(docs, _programs() if programs is None else programs, settings or Settings())
    return dump(docs)


def dump(docs: list[Any]) -> str:
    import yaml

    return yaml.safe_dump_all(
        [d for d in docs if d is not None], sort_keys=False, width=1000, explicit_start=True
    )


# -- the webhook's answer ----------------------------------------------------------


def pod_patch(
    pod: dict[str, Any], programs: dict[str, type[Program]], settings: Settings
) -> list[dict[str, Any]]:
    """The RFC 6902 JSONPatch that injects into a Pod object (empty: nothing to do)."""
    after = copy.deepcopy(pod)
    meta = pod.get("metadata") or {}
    where = f"Pod/{meta.get('name') or meta.get('generateName', '?')}"
    if not isinstance(after.get("spec"), dict):
        raise InjectError(f"{where}: no spec")
    inject_template(where, after, programs, settings)
    return json_patch(pod, after)


def _pointer(path: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def json_patch(before: Any, after: Any, path: list[str] | None = None) -> list[dict[str, Any]]:
    """A JSONPatch from `before` to `after`: objects key by key, anything else
    (lists included) replaced whole. Injection only adds, so this stays short."""
    path = path or []
    if before == after:
        return []
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [{"op": "replace", "path": _pointer(path), "value": after}]
    ops: list[dict[str, Any]] = []
    for key in before:
        if key not in after:
            ops.append({"op": "remove", "path": _pointer([*path, key])})
    for key, value in after.items():
        if key not in before:
            ops.append({"op": "add", "path": _pointer([*path, key]), "value": value})
        else:
            ops += json_patch(before[key], value, [*path, key])
    return ops


# -- the command -------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """`podkit inject [--registry R] [--version V] [--classic] FILE|DIR|- ...`."""
    import yaml

    parser = argparse.ArgumentParser(
        prog="podkit inject",
        description="Add podkit programs to the Kubernetes workloads in FILE, DIR or - "
        "(stdin) as their pod templates' podkit.dev/<program> annotations ask; "
        "write the result to stdout.",
    )
    parser.add_argument("targets", nargs="*", default=["-"], metavar="FILE|DIR|-")
    parser.add_argument(
        "--registry",
        default=DEFAULT_REGISTRY,
        help=f"image registry and path: images are REGISTRY/podkit-<program>:VERSION "
        f"(default the placeholder {DEFAULT_REGISTRY})",
    )
    parser.add_argument("--version", default=__version__, help=f"image tag (default {__version__})")
    parser.add_argument(
        "--classic",
        action="store_true",
        help="sidecars as plain containers, for clusters before 1.29 (no native sidecars)",
    )
    ns = parser.parse_args(argv)
    settings = Settings(ns.registry, ns.version, ns.classic)
    programs = _programs()
    out: list[Any] = []
    errors: list[str] = []
    for target in ns.targets:
        for path in _files(target):
            if path.endswith(".md"):
                continue
            try:
                text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
                docs = list(yaml.safe_load_all(text))
            except OSError as exc:
                print(f"podkit inject: {path}: {exc.strerror or exc}", file=sys.stderr)
                return 2
            except yaml.YAMLError:
                print(f"podkit inject: {path}: not YAML", file=sys.stderr)
                return 2
            try:
                out += inject_docs(docs, programs, settings, f"{path}: ")
            except InjectError as exc:
                errors.append(str(exc))
    if errors:
        # Nothing on stdout: half a stream piped into kubectl apply is worse than none.
        print("\n".join(f"podkit inject: {e}" for e in errors), file=sys.stderr)
        return 1
    sys.stdout.write(dump(out))
    return 0
