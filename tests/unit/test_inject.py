"""`podkit inject`: programs added by annotation, and every output passes both
kubernetes-validate (strict, 1.29 and the newest schema) and `podkit validate`."""

from __future__ import annotations

import copy
import io
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from podkit import __version__
from podkit.inject import (
    INJECTED,
    InjectError,
    Settings,
    dump,
    inject_docs,
    inject_text,
    json_patch,
    main,
    pod_templates,
)
from podkit.validate import _programs, validate_text

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "inject"
SCHEMA_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
PROGRAMS = _programs()

#: Working args for every program podkit ships (each parses with its own parser).
ARGS = {
    "waitfor": "tcp://db:5432 --timeout 2m",
    "logship": "--path '/var/log/app/*.log' --sink loki+http://loki:3100",
    "gitsync": "--repo https://git.example/app.git --root /git --link current",
    "reloader": "--watch /etc/app --webhook-url http://127.0.0.1:8080/-/reload",
    "metrics": "--statsd-udp 127.0.0.1:9125",
    "logformat": "--path /var/log/app/access.log --format nginx",
    "proxy": "--listen 127.0.0.1:8080 --upstream http://api:80",
}


def app_pod(annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    """A locked-down pod template with one app container that writes /var/log/app."""
    return {
        "metadata": {"labels": {"app": "demo"}, "annotations": dict(annotations)},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "app",
                    "image": "example/app:1",
                    "volumeMounts": [{"name": "logs", "mountPath": "/var/log/app"}],
                }
            ],
            "volumes": [{"name": "logs", "emptyDir": {}}],
            **spec,
        },
    }


def workload(kind: str, template: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": f"demo-{kind.lower()}"}
    selector = {"matchLabels": {"app": "demo"}}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, **template}
    if kind == "Job":
        template = copy.deepcopy(template)
        template["spec"]["restartPolicy"] = "Never"
        return {
            "apiVersion": "batch/v1",
            "kind": kind,
            "metadata": meta,
            "spec": {"template": template},
        }
    if kind == "CronJob":
        job = workload("Job", template)["spec"]
        return {
            "apiVersion": "batch/v1",
            "kind": kind,
            "metadata": meta,
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job}},
        }
    spec: dict[str, Any] = {"selector": selector, "template": template}
    if kind == "StatefulSet":
        spec["serviceName"] = "demo"
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


KINDS = ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]


def check_valid(docs: list[Any]) -> None:
    """Both validators accept every document."""
    for doc in docs:
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                loc = ".".join(str(p) for p in e.path)
                pytest.fail(f"{doc['kind']} {version} {loc}: {e.message}", pytrace=False)
    problems = validate_text(dump(docs), "injected", PROGRAMS)
    assert not problems, "\n".join(map(str, problems))


def inject(docs: list[Any], **settings: Any) -> list[Any]:
    return inject_docs(docs, PROGRAMS, Settings(**settings))


def only_template(doc: dict[str, Any]) -> dict[str, Any]:
    return next(t for _, t in pod_templates(doc))


def by_name(spec: dict[str, Any], key: str = "initContainers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in spec.get(key, [])}


@pytest.mark.parametrize("kind", KINDS)
def test_every_workload_kind(kind: str) -> None:
    doc = workload(kind, app_pod({"podkit.dev/logship": ARGS["logship"]}))
    [out] = inject([doc])
    spec = only_template(out)["spec"]
    c = by_name(spec)["podkit-logship"]
    assert c["restartPolicy"] == "Always"
    assert c["image"] == f"REGISTRY/podkit-logship:{__version__}"
    check_valid([out])


def test_list_and_multi_document_stream() -> None:
    annotated = app_pod({"podkit.dev/proxy": ARGS["proxy"]})
    stream = dump(
        [
            {"apiVersion": "v1", "kind": "List", "items": [workload("Deployment", annotated)]},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}},
            workload("Job", annotated),
        ]
    )
    out = list(yaml.safe_load_all(inject_text(stream, PROGRAMS)))
    assert [d["kind"] for d in out] == ["List", "ConfigMap", "Job"]
    assert out[1] == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {},
    }
    for doc in (out[0]["items"][0], out[2]):
        assert "podkit-proxy" in by_name(only_template(doc)["spec"])
    check_valid([out[0]["items"][0], out[1], out[2]])


@pytest.mark.parametrize("program", sorted(ARGS))
def test_every_program(program: str) -> None:
    doc = workload("Deployment", app_pod({f"podkit.dev/{program}": ARGS[program]}))
    [out] = inject([doc])
    template = only_template(out)
    spec = template["spec"]
    c = by_name(spec)[f"podkit-{program}"]
    cls = PROGRAMS[program]
    assert template["metadata"]["annotations"][INJECTED] == program
    assert c["args"] == shlex.split(ARGS[program])
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    res = c["resources"]
    assert set(res["requests"]) == set(res["limits"]) == {"cpu", "memory"}
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in spec["volumes"])
    env = {e["name"]: e["value"] for e in c["env"]}
    if program == "waitfor":  # an init task: a plain init container, no probes
        assert "restartPolicy" not in c and "startupProbe" not in c
    else:
        port = int(cls.default_admin_addr.rsplit(":", 1)[1])
        assert c["restartPolicy"] == "Always"
        assert env["PODKIT_ADMIN_ADDR"] == f"0.0.0.0:{port}"
        assert c["startupProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert c["livenessProbe"]["timeoutSeconds"] >= 2
    check_valid([out])


def test_all_programs_at_once_classic() -> None:
    """--classic: sidecars in containers (before 1.29), init tasks still init containers."""
    annotations = {f"podkit.dev/{p}": a for p, a in ARGS.items()}
    [out] = inject([workload("Deployment", app_pod(annotations))], classic=True)
    spec = only_template(out)["spec"]
    assert list(by_name(spec)) == ["podkit-waitfor"]
    sidecars = by_name(spec, "containers")
    assert set(sidecars) == {"app"} | {f"podkit-{p}" for p in ARGS if p != "waitfor"}
    assert all("restartPolicy" not in c for c in sidecars.values())
    check_valid([out])


def test_one_time_is_a_plain_init_container() -> None:
    args = ARGS["gitsync"] + " --one-time"
    [out] = inject([workload("Deployment", app_pod({"podkit.dev/gitsync": args}))])
    c = by_name(only_template(out)["spec"])["podkit-gitsync"]
    assert "restartPolicy" not in c and "livenessProbe" not in c
    check_valid([out])


def test_native_sidecars_start_before_plain_init_containers() -> None:
    template = app_pod(
        {"podkit.dev/waitfor": ARGS["waitfor"], "podkit.dev/proxy": ARGS["proxy"]},
        initContainers=[{"name": "migrate", "image": "example/migrate:1"}],
    )
    [out] = inject([workload("Deployment", template)])
    names = list(by_name(only_template(out)["spec"]))
    assert names == ["podkit-proxy", "podkit-waitfor", "migrate"]
    check_valid([out])


def test_shared_volumes() -> None:
    """The app's mount covering a path is reused (read-only for a reader); a path
    no app container mounts gets a new emptyDir in both; gitsync writes its root."""
    template = app_pod(
        {
            "podkit.dev/logship": ARGS["logship"],
            "podkit.dev/reloader": "--watch /etc/app/app.conf --process app",
            "podkit.dev/gitsync": "--repo https://git.example/x.git --root /srv/git",
        },
        shareProcessNamespace=True,
    )
    app = template["spec"]["containers"][0]
    app["volumeMounts"].append({"name": "git", "mountPath": "/srv/git", "readOnly": True})
    template["spec"]["volumes"].append({"name": "git", "emptyDir": {}})
    [out] = inject([workload("Deployment", template)])
    spec = only_template(out)["spec"]
    inits = by_name(spec)
    logship = {m["mountPath"]: m for m in inits["podkit-logship"]["volumeMounts"]}
    assert logship["/var/log/app"] == {
        "name": "logs",
        "mountPath": "/var/log/app",
        "readOnly": True,
    }
    gitsync = {m["mountPath"]: m for m in inits["podkit-gitsync"]["volumeMounts"]}
    assert gitsync["/srv/git"] == {"name": "git", "mountPath": "/srv/git"}  # writable
    reloader = {m["mountPath"]: m for m in inits["podkit-reloader"]["volumeMounts"]}
    new = reloader["/etc/app"]
    assert new["readOnly"] is True
    assert {"name": new["name"], "mountPath": "/etc/app"} in spec["containers"][0]["volumeMounts"]
    assert {"name": new["name"], "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
    check_valid([out])


def test_injecting_twice_changes_nothing() -> None:
    annotations = {f"podkit.dev/{p}": a for p, a in ARGS.items()}
    once = inject_text(dump([workload("Deployment", app_pod(annotations))]), PROGRAMS)
    assert inject_text(once, PROGRAMS) == once
    template = only_template(yaml.safe_load(once))
    assert template["metadata"]["annotations"][INJECTED] == ",".join(sorted(ARGS))


def test_a_new_annotation_adds_only_its_program() -> None:
    first = inject([workload("Deployment", app_pod({"podkit.dev/proxy": ARGS["proxy"]}))])
    template = only_template(first[0])
    template["metadata"]["annotations"]["podkit.dev/waitfor"] = ARGS["waitfor"]
    [out] = inject(first)
    spec = only_template(out)["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["podkit-waitfor", "podkit-proxy"]
    assert template["metadata"]["annotations"][INJECTED] == "proxy,waitfor"
    check_valid([out])


def test_nothing_annotated_is_left_alone() -> None:
    doc = workload("Deployment", app_pod({"other.io/x": "y"}))
    before = copy.deepcopy(doc)
    assert inject([doc]) == [before]


@pytest.mark.parametrize(
    "key,value,why",
    [
        ("podkit.dev/logshp", "--path /x/*.log", "no podkit program 'logshp'"),
        ("podkit.dev/logship", "--no-such-flag", "podkit.dev/logship"),
        ("podkit.dev/waitfor", "tcp://db:5432 --timeout soon", "--timeout"),
        ("podkit.dev/proxy", "--listen 'unbalanced", "cannot split"),
        ("podkit.dev/reloader", "--watch /x --admin-addr 127.0.0.1:9413", "loopback"),
        ("podkit.dev/logship", "--help", "--help"),
        ("podkit.dev/logship", "--path /app.log --sink loki+http://l:3100", "root directory"),
    ],
)
def test_errors_name_workload_and_key(key: str, value: str, why: str) -> None:
    doc = workload("StatefulSet", app_pod({key: value}))
    before = copy.deepcopy(doc)
    with pytest.raises(InjectError) as err:
        inject([doc])
    assert "StatefulSet/demo-statefulset" in str(err.value)
    assert key in str(err.value) and why in str(err.value)
    assert doc == before  # nothing half-injected


def run_cli(argv: list[str], stdin: str = "", monkeypatch: Any = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
    try:
        code = main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def test_cli_flags_stdin_and_directory(tmp_path: Path) -> None:
    doc = workload("Deployment", app_pod({"podkit.dev/metrics": ARGS["metrics"]}))
    code, out, _ = run_cli(["--registry", "ghcr.io/acme", "--version", "9.9.9", "-"], dump([doc]))
    assert code == 0
    [injected] = list(yaml.safe_load_all(out))
    c = by_name(only_template(injected)["spec"])["podkit-metrics"]
    assert c["image"] == "ghcr.io/acme/podkit-metrics:9.9.9"
    (tmp_path / "a.yaml").write_text(dump([doc]))
    (tmp_path / "b.yml").write_text(dump([workload("Pod", app_pod({}))]))
    code, out, _ = run_cli([str(tmp_path)])
    assert code == 0
    assert [d["kind"] for d in yaml.safe_load_all(out)] == ["Deployment", "Pod"]


def test_cli_error_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(dump([workload("Deployment", app_pod({"podkit.dev/nope": ""}))]))
    code, out, err = run_cli([str(path)])
    assert (code, out) == (1, "")
    assert f"{path}: Deployment/demo-deployment: annotation podkit.dev/nope" in err
    path.write_text("a: [")
    assert run_cli([str(path)])[0] == 2


def test_json_patch_applies() -> None:
    before = {"a": {"b/c": 1, "d": [1]}, "e": 2}
    after = {"a": {"b/c": 2, "d": [1, 2], "n~": {}}, "f": 3}
    ops = json_patch(before, after)
    assert {"op": "replace", "path": "/a/b~1c", "value": 2} in ops
    assert {"op": "add", "path": "/a/n~0", "value": {}} in ops
    assert {"op": "remove", "path": "/e"} in ops
    assert json_patch(before, before) == []


def test_example_is_up_to_date() -> None:
    """examples/inject/app.injected.yaml is what `podkit inject app.yaml` writes."""
    code, out, err = run_cli([str(EXAMPLE / "app.yaml")])
    assert code == 0, err
    assert out == (EXAMPLE / "app.injected.yaml").read_text(), (
        "regenerate: podkit inject examples/inject/app.yaml > examples/inject/app.injected.yaml"
    )
    check_valid(list(yaml.safe_load_all(out)))


def test_a_third_party_program_is_injected_too() -> None:
    """Any class in the podkit.programs entry-point group can be annotated; with
    nothing measured for it, it gets the generous default memory."""
    from podkit.inject import OTHER_MEMORY_MIB
    from tests.sample_programs import Basic

    programs = {**PROGRAMS, "basic": Basic}
    doc = workload("Deployment", app_pod({"podkit.dev/basic": "--count 5"}))
    [out] = inject_docs([doc], programs, Settings())
    c = by_name(only_template(out)["spec"])["podkit-basic"]
    assert c["restartPolicy"] == "Always"
    assert c["resources"]["limits"]["memory"] == f"{OTHER_MEMORY_MIB[1]}Mi"
    assert c["livenessProbe"]["httpGet"]["port"] == int(Basic.default_admin_addr.split(":")[1])
    assert not validate_text(dump([out]), "injected", programs)
    with pytest.raises(InjectError, match=r"podkit\.dev/basic"):
        inject_docs(
            [workload("Pod", app_pod({"podkit.dev/basic": "--count many"}))], programs, Settings()
        )


def test_gitsync_and_reloader_share_the_checkout() -> None:
    """gitsync writes a volume no app container had; the reloader reads the same one."""
    annotations = {
        "podkit.dev/gitsync": "--repo https://git.example/c.git --root /config --link current",
        "podkit.dev/reloader": "--watch /config/current --webhook-url http://127.0.0.1:8080/r",
    }
    [out] = inject([workload("Deployment", app_pod(annotations))])
    spec = only_template(out)["spec"]
    inits = by_name(spec)
    git = next(m for m in inits["podkit-gitsync"]["volumeMounts"] if m["mountPath"] == "/config")
    assert "readOnly" not in git
    rel = next(m for m in inits["podkit-reloader"]["volumeMounts"] if m["mountPath"] == "/config")
    assert rel == {**git, "readOnly": True}
    assert {"name": git["name"], "mountPath": "/config"} in spec["containers"][0]["volumeMounts"]
    check_valid([out])


def test_the_e2e_worker_example_injects_and_validates() -> None:
    """examples/inject/worker.yaml, which the e2e tier runs injected, gets its
    three programs and passes the same checks as every injection."""
    code, out, err = run_cli([str(EXAMPLE / "worker.yaml")])
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    check_valid(docs)
    spec = only_template(docs[0])["spec"]
    assert [c["name"] for c in spec["initContainers"]] == [
        "podkit-logship",
        "podkit-proxy",
        "podkit-waitfor",
    ]
