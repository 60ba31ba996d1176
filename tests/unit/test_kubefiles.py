"""kubefiles' parts without a process: the folder writer, the kubeconfig reader, options."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from podkit.sidecars.kubefiles import KubeFiles
from podkit.sidecars.kubefiles.kubeapi import Gone, _event, from_kubeconfig, in_cluster
from podkit.sidecars.kubefiles.writer import MANIFEST, Folder, safe_name, safe_subdir

from podkit import UsageError
from podkit.runner import configure


def test_safe_names() -> None:
    assert safe_name("dash.json") is None
    for bad in ("", ".", "..", "a/b", "../x", "a\\b", "x\x00", MANIFEST, "a.kubefiles-tmp"):
        assert safe_name(bad) is not None, bad


def test_safe_subdir(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert safe_subdir("team/a", root) == "team/a"
    assert safe_subdir(os.path.join(root, "x"), root) == "x"
    assert safe_subdir(root, root) == ""
    assert safe_subdir("../etc", root) is None
    assert safe_subdir("a/../../etc", root) is None
    assert safe_subdir("/etc", root) is None


def test_writer_writes_removes_only_its_own(tmp_path: Path) -> None:
    f = Folder(str(tmp_path), 0o640)
    (tmp_path / "theirs.txt").write_text("keep")
    res = f.apply({"a.json": b"1", "sub/b.json": b"2"})
    assert sorted(res.written) == ["a.json", "sub/b.json"]
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    manifest = json.loads((tmp_path / MANIFEST).read_text())["files"]
    assert set(manifest) == {"a.json", "sub/b.json"}
    # A file someone else put at a wanted path is neither overwritten nor later deleted.
    res = f.apply({"a.json": b"1", "theirs.txt": b"mine now?"})
    assert res.conflicts == ["theirs.txt"]
    assert res.removed == ["sub/b.json"]
    assert not (tmp_path / "sub").exists()  # the directory it made is gone with its file
    assert (tmp_path / "theirs.txt").read_text() == "keep"
    res = f.apply({})
    assert res.removed == ["a.json"]
    assert sorted(os.listdir(tmp_path)) == sorted([MANIFEST, "theirs.txt"])


def test_writer_manifest_survives_restart_and_verify_repairs(tmp_path: Path) -> None:
    Folder(str(tmp_path), 0o644).apply({"a": b"1", "b": b"2"})
    f = Folder(str(tmp_path), 0o644)  # a new process: ownership comes from the manifest
    (tmp_path / "a").write_text("tampered")
    (tmp_path / "b").unlink()
    assert not f.apply({"a": b"1", "b": b"2"}).changed  # by hash only: nothing to do
    res = f.apply({"a": b"1", "b": b"2"}, verify=True)
    assert sorted(res.written) == ["a", "b"]
    assert (tmp_path / "a").read_bytes() == b"1"
    assert f.apply({}).removed == ["a", "b"]


def test_writer_intent_before_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the rename must not leave a file the manifest does not own."""
    f = Folder(str(tmp_path), 0o644)
    seen: list[dict[str, Any]] = []
    real = os.replace

    def spy(src: Any, dst: Any) -> None:
        if not str(dst).endswith(MANIFEST):
            seen.append(json.loads((tmp_path / MANIFEST).read_text())["files"])
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    f.apply({"x": b"1"})
    assert "x" in seen[0]


def test_writer_adopts_identical_file(tmp_path: Path) -> None:
    (tmp_path / "same").write_bytes(b"1")
    f = Folder(str(tmp_path), 0o644)
    res = f.apply({"same": b"1"})
    assert not res.conflicts and not res.written
    assert "same" in f.owned


def test_watch_error_event_410() -> None:
    line = json.dumps(
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    )
    with pytest.raises(Gone):
        _event(line.encode(), "configmaps")


def _kubeconfig(tmp_path: Path, user: dict[str, Any]) -> Path:
    import yaml

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "contexts": [
            {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team"}}
        ],
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": "https://127.0.0.1:6443/",
                    "certificate-authority": "ca.crt",
                },
            }
        ],
        "users": [{"name": "u", "user": user}],
    }
    p = tmp_path / "config"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_kubeconfig_token_and_cert(tmp_path: Path) -> None:
    c = from_kubeconfig(str(_kubeconfig(tmp_path, {"token": "abc"})))
    assert c.server == "https://127.0.0.1:6443"
    assert c.namespace == "team" and c.token == "abc"
    assert c.ca_file == str(tmp_path / "ca.crt")
    pem = base64.b64encode(b"CERT").decode()
    c = from_kubeconfig(
        str(_kubeconfig(tmp_path, {"client-certificate-data": pem, "client-key-data": pem}))
    )
    assert c.cert_data == (b"CERT", b"CERT")
    c = from_kubeconfig(str(_kubeconfig(tmp_path, {"tokenFile": "tok"})))
    assert c.token_file == str(tmp_path / "tok")
    with pytest.raises(UsageError, match="exec"):
        from_kubeconfig(str(_kubeconfig(tmp_path, {"exec": {"command": "aws"}})))


def test_in_cluster_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("t")
    (tmp_path / "namespace").write_text("prod\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    c = in_cluster(str(tmp_path))
    assert c.server == "https://10.0.0.1:443" and c.namespace == "prod"
    assert c.token_file == str(tmp_path / "token") and c.ca_file is None
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(UsageError, match="kubeconfig"):
        in_cluster(str(tmp_path))
    # kubectl proxy on a laptop: --server and no service account at all.
    c = in_cluster(str(tmp_path / "none"), "http://127.0.0.1:8001")
    assert c.token_file is None and c.namespace is None
    with pytest.raises(UsageError, match="no token"):
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        in_cluster(str(tmp_path / "none"))


def _sa(tmp_path: Path) -> list[str]:
    (tmp_path / "token").write_text("t")
    (tmp_path / "namespace").write_text("own")
    return ["--server", "http://127.0.0.1:1", "--service-account-dir", str(tmp_path)]


def test_k8s_sidecar_env_names(tmp_path: Path) -> None:
    env = {
        "LABEL": "grafana_dashboard",
        "LABEL_VALUE": "1",
        "FOLDER": "/dash",
        "NAMESPACE": "a,b",
        "RESOURCE": "both",
        "METHOD": "LIST",
        "REQ_URL": "http://127.0.0.1:3000/api/admin/provisioning/dashboards/reload",
        "REQ_METHOD": "post",
        "SCRIPT": "echo hi",
        "UNIQUE_FILENAMES": "true",
        "DEFAULT_FILE_MODE": "0600",
        "FOLDER_ANNOTATION": "target",
        "SKIP_TLS_VERIFY": "true",
    }
    p: Any = configure(KubeFiles, _sa(tmp_path), env)
    assert p.selector == "grafana_dashboard=1"
    assert p.folder == "/dash" and p.namespaces == ["a", "b"]
    assert p.resources == ["configmap", "secret"]
    assert p.one_time and p.unique_filenames and p.mode == 0o600
    assert p.webhook.method == "POST" and p.script == "echo hi"
    assert p.folder_annotation == "target" and p.creds.insecure
    # podkit's own names win over k8s-sidecar's.
    p = configure(
        KubeFiles, _sa(tmp_path), {**env, "PODKIT_LABEL": "x in (a,b)", "LABEL_VALUE": ""}
    )
    assert p.selector == "x in (a,b)"


def test_defaults_and_usage_errors(tmp_path: Path) -> None:
    base = [*_sa(tmp_path), "--label", "a=1", "--folder", str(tmp_path / "o")]
    p: Any = configure(KubeFiles, base, {})
    assert p.namespaces == ["own"] and p.resources == ["configmap"]
    assert (p.resync, p.max_watch_age, p.watch_idle_timeout, p.stale_after) == (300, 600, 90, 180)
    assert configure(KubeFiles, [*base, "--namespace", "ALL"], {}).namespaces == [None]  # type: ignore[attr-defined]
    for extra, msg in (
        (["--default-file-mode", "999"], "octal"),
        (["--stale-after", "10s", "--watch-idle-timeout", "20s"], "stale-after"),
        (["--resource", "pods"], "resource"),
        (["--resync", "0s"], "minimum"),
    ):
        with pytest.raises(UsageError, match=msg):
            configure(KubeFiles, [*base, *extra], {})


def test_writer_never_follows_links_in_the_folder(tmp_path: Path) -> None:
    """The app shares the folder: a link it puts there must not carry writes or deletes out."""
    root, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "d.json").write_text("not yours")
    f = Folder(str(root), 0o644)
    f.apply({"team/d.json": b"1", "x.json": b"1"})
    # The subfolder swapped for a link to elsewhere: no write, no delete there.
    (root / "team" / "d.json").unlink()
    (root / "team").rmdir()
    (root / "team").symlink_to(outside)
    res = f.apply({"team/d.json": b"2", "x.json": b"1"}, verify=True)
    assert res.errors and (outside / "d.json").read_text() == "not yours"
    res = f.apply({"x.json": b"1"})
    assert (outside / "d.json").read_text() == "not yours"
    # An owned file replaced by a FIFO or a link to a secret: replaced, never read or followed.
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    (root / "x.json").unlink()
    (root / "x.json").symlink_to(secret)
    f.apply({"x.json": b"1"}, verify=True)
    assert (root / "x.json").read_bytes() == b"1" and not (root / "x.json").is_symlink()
    assert secret.read_text() == "s3cret"
    (root / "x.json").unlink()
    os.mkfifo(root / "x.json")
    f.apply({"x.json": b"1"}, verify=True)  # would block forever reading the FIFO
    assert (root / "x.json").read_bytes() == b"1"
    # Links at the temporary names or at the manifest: unlinked, never written through.
    (root / ".x.json.kubefiles-tmp").symlink_to(secret)
    (root / ".kubefiles-manifest.json.kubefiles-tmp").symlink_to(secret)
    f.apply({"x.json": b"2"})
    assert secret.read_text() == "s3cret" and (root / "x.json").read_bytes() == b"2"
    (root / MANIFEST).unlink()
    (root / MANIFEST).symlink_to(secret)
    assert Folder(str(root), 0o644).apply({}).removed == []  # owns nothing; nothing read
    assert secret.read_text() == "s3cret"
