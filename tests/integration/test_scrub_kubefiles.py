"""A kubeconfig's inline user token never reaches kubefiles' stderr.

A tokenFile is a SecretFile (registered as it is read); an inline `token:` was
sent but never registered, and the API server's refusal `message` is quoted in
the error kubefiles writes: an authenticating proxy in front of the API server
that names the token it refused put it in the log.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import yaml

from tests.helpers import run_program
from tests.unit.test_scrub_gitsync_auth import Answering


def test_an_inline_kubeconfig_token_quoted_by_a_401_is_not_written(tmp_path: Path) -> None:
    token = "kubeconfig-Inline-t0ken-3310"

    def answer(h: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        got = h.headers.get("Authorization", "").removeprefix("Bearer ")
        doc = {"kind": "Status", "code": 401, "message": f"token {got} has expired"}
        return 401, json.dumps(doc).encode()

    with Answering(answer) as api:
        kc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "a"}}],
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{api.port}"}}],
            "users": [{"name": "u", "user": {"token": token}}],
        }
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kc))
        p = run_program(
            "kubefiles",
            [
                "--kubeconfig", str(tmp_path / "kubeconfig"),
                "--label", "grafana_dashboard=1",
                "--folder", str(tmp_path / "out"),
                "--one-time",
                "--admin-addr", "off",
            ],
        )  # fmt: skip
    stderr = p.stderr.decode()
    assert p.returncode == 1, stderr
    assert "unauthorized: the token was refused (token *** has expired)" in stderr, stderr
    assert token not in stderr
