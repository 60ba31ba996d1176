"""`podkit validate FILE|DIR|-`: check the podkit containers of Kubernetes manifests.

What a kubelet would only tell at 3 a.m., told before the manifest ships.
For every container whose image is `…/podkit-<program>[:tag]`, in a Pod or a
workload's pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
CronJob, `List`, multi-document streams):

- its args (and literal env) parse with the program's real option parser,
  with the defaults its image sets (`image_env`), and obey the program's
  cross-option rules that need no I/O (`Program.static_problems`);
- no `command`: the image's entrypoint is the program;
- a probe on an httpGet port points at the program's admin port, and the
  admin server does not listen on loopback only (the kubelet probes the pod IP);
- a long-running program among `initContainers` is a native sidecar
  (`restartPolicy: Always`), unless it runs once (`--one-time`); a program
  that can run once and is a plain init container has `--one-time`; an init
  task (waitfor) is not a native sidecar (it would be restarted forever);
- every absolute path it is given (files, directories, globs) lies on a
  volume mounted in that container, and every mounted volume is declared.

Exit 0 when nothing is wrong, 1 with one line per problem, 2 when a file
cannot be read or is not YAML. Schema validation is kubeconform's or
kubernetes-validate's job, not this one's.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .options import UsageError, split_addr
from .program import InitTask, Program

IMAGE = re.compile(r"(?:^|/)podkit-(?P<program>[a-z][a-z0-9-]*)(?:[:@].*)?$")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
LOOPBACK = ("127.", "localhost", "::1", "[::1]")
#: Where the images keep state: /tmp is the one writable place on a read-only root.
IMAGE_STATE_DIR = "/tmp/podkit"


def image_env(cls: type[Program]) -> dict[str, str]:
    """The environment podkit's image for `cls` sets (images/Dockerfile, via
    images/build.sh): the admin server on every interface at the program's
    own port, and state under /tmp. Declared here once, read by both."""
    addr = cls.default_admin_addr
    if addr != "off":
        addr = "0.0.0.0:" + addr.rsplit(":", 1)[1]
    return {"PODKIT_ADMIN_ADDR": addr, "PODKIT_STATE_DIR": IMAGE_STATE_DIR}


@dataclass
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def pod_specs(doc: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every pod a document describes."""
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    name = f"{kind}/{(doc.get('metadata') or {}).get('name', '?')}"
    spec = doc.get("spec") or {}
    if kind == "List":
        for item in doc.get("items") or []:
            yield from pod_specs(item)
    elif kind == "Pod":
        yield name, spec
    elif kind in WORKLOADS:
        yield name, (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        yield name, (job.get("template") or {}).get("spec") or {}


def _programs() -> dict[str, type[Program]]:
    from .cli import programs

    out = {}
    for name, ep in programs().items():
        try:
            out[name] = ep.load()
        except Exception:  # a broken plugin is reported where it is used
            continue
    return out


def check_pod(
    where: str, spec: dict[str, Any], programs: dict[str, type[Program]]
) -> list[Problem]:
    problems: list[Problem] = []
    declared = {v.get("name") for v in spec.get("volumes") or []}
    inits = spec.get("initContainers") or []
    for c in [*inits, *(spec.get("containers") or [])]:
        image = str(c.get("image", ""))
        m = IMAGE.search(image)
        if not m:
            continue
        here = f"{where} container {c.get('name', '?')}"
        cls = programs.get(m["program"])
        if cls is None:
            problems.append(Problem(here, f"no podkit program {m['program']!r} is installed"))
            continue
        problems += [Problem(here, p) for p in check_container(c, c in inits, cls, declared)]
    return problems


def check_container(
    c: dict[str, Any], is_init: bool, cls: type[Program], declared: set[Any]
) -> list[str]:
    from .runner import configure

    out: list[str] = []
    if "command" in c:
        out.append("sets command: the image's entrypoint is the program, pass only args")
    args = [str(a) for a in c.get("args") or []]
    env = image_env(cls)
    env.update({str(e["name"]): str(e["value"]) for e in c.get("env") or [] if "value" in e})
    env.update(_from_elsewhere(cls, c))
    try:
        program = configure(cls, args, env, validate=False)
    except UsageError as exc:
        return [*out, f"args: {exc}"]
    except SystemExit:  # --help in args
        return [*out, "args: --help"]

    out += program.static_problems()
    native = c.get("restartPolicy") == "Always"
    one_time = bool(getattr(program, "one_time", False))
    if is_init and not native and not issubclass(cls, InitTask) and not one_time:
        if hasattr(program, "one_time"):
            out.append("a plain init container without --one-time never finishes")
        else:
            out.append(
                "a long-running program as a plain init container never finishes: "
                "add restartPolicy: Always (a native sidecar)"
            )
    if native and issubclass(cls, InitTask):
        out.append("an init task as a native sidecar (restartPolicy: Always) restarts forever")

    out += _check_probes(c, program)
    out += _check_paths(c, program, declared)
    return out


def _from_elsewhere(cls: type[Program], c: dict[str, Any]) -> dict[str, str]:
    """A stand-in for each plain-text setting whose env value comes from a
    Secret or ConfigMap (`valueFrom`): it is set in the pod, so a rule that
    asks for it (gitsync's --repo from a Secret) must not say it is missing."""
    names = {str(e["name"]) for e in c.get("env") or [] if "valueFrom" in e}
    out = {}
    for opt in cls.options():
        if opt.resolve_kind() != "str" or opt.repeat:
            continue
        for name in (opt.env_name, *opt.also_env):
            if name in names:
                out[name] = "(from valueFrom)"
    return out


def _check_probes(c: dict[str, Any], program: Program) -> list[str]:
    out = []
    named = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    addr = program.admin_addr or "off"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = (c.get(kind) or {}).get("httpGet")
        if not get:
            continue
        port = named.get(get.get("port"), get.get("port"))
        if addr == "off":
            out.append(f"{kind} on port {port}, but the admin server is off (--admin-addr)")
            continue
        host, admin_port = split_addr(addr)
        if port != admin_port:
            out.append(f"{kind} on port {port}, but the admin server listens on {admin_port}")
        want = "/healthz" if kind == "livenessProbe" else "/readyz"
        if get.get("path") != want:
            out.append(f"{kind} on path {get.get('path')!r}: the admin server answers it on {want}")
        if host.startswith(LOOPBACK):
            out.append(
                f"{kind}: the kubelet probes the pod IP, but --admin-addr {addr} is "
                f"loopback only (use 0.0.0.0:{admin_port})"
            )
    return out


def _paths(program: Program) -> Iterator[tuple[str, str]]:
    """(flag, absolute path) of every path-valued option that is set."""
    for opt in type(program).options():
        if opt.resolve_kind() != "path" and opt.metavar not in ("GLOB", "FILE", "DIR"):
            continue
        value = program.settings.get(opt.name)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v.startswith("/"):
                yield opt.flag_name, v


def _check_paths(c: dict[str, Any], program: Program, declared: set[Any]) -> list[str]:
    out = []
    mounts = c.get("volumeMounts") or []
    for m in mounts:
        if m.get("name") not in declared and declared:
            out.append(f"volumeMount {m.get('name')!r} names no volume of the pod")
    roots = [str(m.get("mountPath", "")).rstrip("/") + "/" for m in mounts]
    for flag, path in _paths(program):
        fixed = path.split("*")[0].split("?")[0].split("[")[0]
        if not any((fixed.rstrip("/") + "/").startswith(r) for r in roots):
            out.append(f"{flag} {path} is on no mounted volume (mount one at its directory)")
    return out


def validate_text(text: str, name: str, programs: dict[str, type[Program]]) -> list[Problem]:
    """Problems of one YAML stream; of a Markdown file, of each ```yaml block."""
    import yaml

    if name.endswith(".md"):
        problems = []
        for m in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, m.start()) + 2
            problems += validate_text(m[1], f"{name}:{line}", programs)
        return problems
    problems = []
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and "kind" not in doc:  # a fragment, as docs show them
            if "initContainers" in doc or "containers" in doc:
                doc = {"spec": doc}
            if "spec" in doc:
                doc = {"kind": "Pod", "metadata": {"name": "(snippet)"}, **doc}
        for where, spec in pod_specs(doc):
            problems += check_pod(f"{name}: {where}", spec, programs)
    return problems


def _files(target: str) -> list[str]:
    if target == "-" or not os.path.isdir(target):
        return [target]
    found = glob.glob(os.path.join(target, "**", "*"), recursive=True)
    return sorted(f for f in found if f.endswith((".yaml", ".yml", ".md")))


def main(argv: list[str]) -> int:
    """`podkit validate FILE|DIR|- ...`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    import yaml

    programs = _programs()
    problems: list[Problem] = []
    for target in argv:
        for path in _files(target):
            try:
                text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
                problems += validate_text(text, path, programs)
            except OSError as exc:
                print(f"podkit validate: {path}: {exc.strerror or exc}", file=sys.stderr)
                return 2
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                line = f" line {mark.line + 1}" if mark is not None else ""
                print(f"podkit validate: {path}:{line}: not YAML", file=sys.stderr)
                return 2
    for p in problems:
        print(p)
    return 1 if problems else 0
