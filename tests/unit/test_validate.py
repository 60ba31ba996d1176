"""`podkit validate`: the mistakes that break a pod are caught before it ships."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from podkit.cli import programs
from podkit.validate import image_env, validate_text

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = {name: ep.load() for name, ep in programs().items()}

GOOD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers:
        - name: wait
          image: REGISTRY/podkit-waitfor:0.1.0
          args: ["tcp://db:5432", "--timeout", "2m"]
        - name: logship
          image: REGISTRY/podkit-logship:0.1.0
          restartPolicy: Always
          args: ["--path", "/logs/*.log", "--sink", "loki+http://loki:3100"]
          startupProbe: {httpGet: {path: /readyz, port: 9411}}
          livenessProbe: {httpGet: {path: /healthz, port: admin}}
          ports: [{name: admin, containerPort: 9411}]
          volumeMounts: [{name: logs, mountPath: /logs}, {name: tmp, mountPath: /tmp}]
      containers:
        - name: app
          image: registry.example/app:1
          volumeMounts: [{name: logs, mountPath: /logs}]
      volumes: [{name: logs, emptyDir: {}}, {name: tmp, emptyDir: {}}]
"""


def problems(text: str) -> list[str]:
    return [p.message for p in validate_text(text, "test.yaml", PROGRAMS)]


def logship(**changes: object) -> str:
    doc = yaml.safe_load(GOOD)
    c = doc["spec"]["template"]["spec"]["initContainers"][1]
    for key, value in changes.items():
        if value is None:
            c.pop(key, None)
        else:
            c[key] = value
    return yaml.safe_dump(doc)


def test_a_careful_manifest_passes() -> None:
    assert problems(GOOD) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"command": ["podkit-logship"]}, "sets command"),
        ({"args": ["--path", "/logs/*.log"]}, "args: --sink is required"),
        ({"args": ["--path", "/logs/*.log", "--sink", "x", "--batch-max-wait", "soon"]}, "args:"),
        (
            {"args": ["--path", "/logs/*.log", "--sink", "stdout://", "--admin-addr", "9411"]},
            "did you mean 0.0.0.0:9411?",
        ),
        (
            {
                "args": [
                    "--path",
                    "/logs/*.log",
                    "--sink",
                    "stdout://",
                    "--admin-addr=127.0.0.1:9411",
                ]
            },
            "loopback only (use 0.0.0.0:9411)",
        ),
        ({"startupProbe": {"httpGet": {"path": "/readyz", "port": 8080}}}, "on port 8080"),
        (
            {"startupProbe": {"httpGet": {"path": "/healthz", "port": 9411}}},
            "answers it on /readyz",
        ),
        ({"restartPolicy": None}, "add restartPolicy: Always"),
        ({"volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}, "--path /logs/*.log is on no"),
        ({"volumeMounts": [{"name": "nope", "mountPath": "/logs"}]}, "names no volume"),
        ({"image": "REGISTRY/podkit-nosuch:1"}, "no podkit program 'nosuch'"),
    ],
)
def test_each_mistake_is_named(changes: dict[str, object], expected: str) -> None:
    found = problems(logship(**changes))
    assert any(expected in p for p in found), found


def test_gitsync_as_a_plain_init_container_needs_one_time() -> None:
    text = """
kind: Pod
metadata: {name: p}
spec:
  initContainers:
    - name: init
      image: REGISTRY/podkit-gitsync:0.1.0
      args: ["--repo", "https://git.example/x.git", "--root", "/git"]
      volumeMounts: [{name: git, mountPath: /git}]
  containers: [{name: app, image: app}]
  volumes: [{name: git, emptyDir: {}}]
"""
    assert any("without --one-time" in p for p in problems(text))
    fixed = text.replace('"/git"]', '"/git", "--one-time"]')
    assert problems(fixed) == []


def test_an_init_task_as_a_native_sidecar_restarts_forever() -> None:
    text = """
kind: Pod
metadata: {name: p}
spec:
  initContainers:
    - {name: w, image: podkit-waitfor, restartPolicy: Always, args: ["tcp://db:1"]}
  containers: [{name: app, image: app}]
"""
    assert any("restarts forever" in p for p in problems(text))


def test_lists_cronjobs_and_streams_are_read() -> None:
    bad = {"name": "l", "image": "x/podkit-logship:1", "restartPolicy": "Always", "args": ["--x"]}
    pod = {"containers": [{"name": "a", "image": "a"}], "initContainers": [bad]}
    cron = {
        "kind": "CronJob",
        "metadata": {"name": "c"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}},
    }
    lst = {"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p"}, "spec": pod}]}
    found = validate_text(yaml.safe_dump_all([cron, lst]), "t.yaml", PROGRAMS)
    assert [p.where for p in found] == [
        "t.yaml: CronJob/c container l",
        "t.yaml: Pod/p container l",
    ]


def test_the_examples_readme_and_docs_pass_as_shipped() -> None:
    """What docs and examples show must run: the command a user would type."""
    res = subprocess.run(
        [sys.executable, "-m", "podkit", "validate", "examples", "README.md", "docs"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(logship(command=["x"]))
    res = subprocess.run(
        [sys.executable, "-m", "podkit", "validate", str(bad)], capture_output=True
    )
    assert res.returncode == 1 and b"sets command" in res.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [\n")
    res = subprocess.run(
        [sys.executable, "-m", "podkit", "validate", str(broken)], capture_output=True
    )
    assert res.returncode == 2 and b"not YAML" in res.stderr


def test_image_env_binds_the_admin_server_for_the_kubelet() -> None:
    assert image_env(PROGRAMS["logship"])["PODKIT_ADMIN_ADDR"] == "0.0.0.0:9411"
    assert image_env(PROGRAMS["waitfor"])["PODKIT_ADMIN_ADDR"] == "off"


GITSYNC = """
kind: Pod
metadata: {name: p}
spec:
  containers:
    - name: gitsync
      image: REGISTRY/podkit-gitsync:0.1.0
      args: ARGS
      volumeMounts: [{name: git, mountPath: /git}, {name: conf, mountPath: /etc/gitsync}]
    - {name: app, image: app}
  volumes: [{name: git, emptyDir: {}}, {name: conf, configMap: {name: gitsync}}]
"""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--root", "/git"], "--repo is required [env PODKIT_REPO] (or repos: in --config)"),
        (["--repo", "ext::sh -c id", "--root", "/git"], "remote-helper transports (ext::)"),
        (
            ["--repo", "https://h/x.git", "--root", "/git", "--depth", "-1"],
            "--depth: -1 is below the minimum 0",
        ),
        (["--repo", "https://h/x.git", "--root", "/git", "--link", "../out"], "--link: a relative"),
        (["--repo", "https://h/x.git", "--root", "/git", "--verify-tag"], "needs --verify-sig"),
    ],
)
def test_gitsync_rules_on_values_alone_are_checked(args: list[str], expected: str) -> None:
    """Rules gitsync's validate() applies that need no file of the pod (issue 23)."""
    found = problems(GITSYNC.replace("ARGS", str(args)))
    assert any(expected in p for p in found), found


def test_gitsync_repos_in_a_config_file_of_the_pod_is_not_second_guessed() -> None:
    """The file is read in the pod, so --config may hold the repos: --repo would give."""
    args = ["--root", "/git", "--config", "/etc/gitsync/repos.yaml"]
    assert problems(GITSYNC.replace("ARGS", str(args))) == []


def test_gitsync_repo_from_a_secret_is_not_missing() -> None:
    """GITSYNC_REPO from a Secret (a URL holding a token) is set in the pod."""
    text = GITSYNC.replace("ARGS", str(["--root", "/git"])).replace(
        "      volumeMounts:",
        "      env: [{name: GITSYNC_REPO, valueFrom: {secretKeyRef: {name: s, key: url}}}]\n"
        "      volumeMounts:",
        1,
    )
    assert problems(text) == []
