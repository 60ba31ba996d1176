"""json_exporter's config file and its multi-target /probe, black box.

The config and the document are json_exporter's own example (examples/config.yml
and examples/data.json), typed in as its users write them; the expected series
are what json_exporter serves for them. Every answer passes promtool.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ProgramProcess, run_program
from tests.peers.prometheus import promtool_check

CONFIG = """
---
modules:
  default:
    headers:
      X-Dummy: my-test-header
    metrics:
    - name: example_global_value
      path: '{ .counter }'
      help: Example of a top-level global value scrape in the json
      labels:
        environment: beta # static label
        location: 'planet-{.location}'          # dynamic label
    - name: example_timestamped_value
      type: object
      path: '{ .values[?(@.state == "INACTIVE")] }'
      epochTimestamp: '{ .timestamp }'
      help: Example of a timestamped value scrape in the json
      labels:
        environment: beta # static label
      values:
        count: '{.count}' # dynamic value
    - name: example_value
      type: object
      help: Example of sub-level value scrapes from a json
      path: '{.values[?(@.state == "ACTIVE")]}'
      labels:
        environment: beta # static label
        id: '{.id}'       # dynamic label
      values:
        active: 1         # static value
        count: '{.count}' # dynamic value
        boolean: '{.some_boolean}'
    - name: example_missing_key
      path: '{ .missing_key }'
      allow_missing_key: true
      help: Example of allowing a missing key.

  animals:
    metrics:
    - name: animal
      type: object
      help: Example of top-level lists in a separate module
      path: '{ [*] }'
      labels:
        name: '{ .noun }'
        predator: '{ .predator }'
      values:
        population: '{ .population }'

  stamped:
    metrics:
    - name: job_duration_seconds
      type: object
      valuetype: gauge
      path: '{.jobs[*]}'
      epochTimestamp: '{.finished_ms}'
      labels: {job: '{.name}'}
      values: {last: '{.seconds}'}

  posted:
    http_client_config:
      basic_auth:
        username: myuser
        password: veryverysecret
    body:
      content: '{"since": "{{ .since | first }}"}'
      templatize: true
    metrics:
    - name: posted_total
      valuetype: counter
      path: '{.count}'
"""

DATA = {
    "counter": 1234,
    "timestamp": 1657568506,
    "values": [
        {"id": "id-A", "count": 1, "some_boolean": True, "state": "ACTIVE"},
        {"id": "id-B", "count": 2, "some_boolean": True, "state": "INACTIVE"},
        {"id": "id-C", "count": 3, "some_boolean": False, "state": "ACTIVE"},
    ],
    "location": "mars",
}
ANIMALS = [
    {"noun": "lion", "population": 123, "predator": True},
    {"noun": "deer", "population": 456, "predator": False},
    {"noun": "pigeon", "population": 789, "predator": False},
]
JOBS = {"jobs": [{"name": "backup", "seconds": 12.5, "finished_ms": 1700000000123}]}


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict[str, str], bytes]] = []
    #: More documents by path (the conformance tier serves json_exporter's example).
    docs: dict[str, Any] = {}

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.seen.append((self.command, self.path, dict(self.headers), body))
        doc: Any = {
            **self.docs,
            "/data.json": DATA,
            "/animals.json": ANIMALS,
            "/jobs.json": JOBS,
            "/posted.json": {"count": 5},
        }.get(self.path)
        if doc is None:
            self.send_response(404)
            self.end_headers()
            return
        raw = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def app() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Handler.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def probe(proc: ProgramProcess, module: str, target: str) -> tuple[int, str]:
    status, _, body = proc.get(f"/probe?module={module}&target={quote(target, safe='')}")
    return status, body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    promtool_check(text.encode())
    # Each family's samples together: object metrics must not interleave.
    order = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert len(order) == len(set(order))
    names = [ln.split("{")[0].split()[0] for ln in text.splitlines() if not ln.startswith("#")]
    runs = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    assert len(runs) == len(set(runs)), names
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_json_exporter_example_config_and_data_give_its_series(tmp_path: Path, app: str) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text(CONFIG)
    with ProgramProcess("metrics", ["--json-exporter-config", str(cfg)], tmp=tmp_path) as proc:
        proc.wait_ready()
        status, text = probe(proc, "default", f"{app}/data.json")
        assert status == 200, text
        got = samples(text)
        env = ("environment", "beta")
        assert got == {
            ("example_global_value", (env, ("location", "planet-mars"))): 1234.0,
            # epochTimestamp is read from each selected object, which has no
            # `timestamp`: json_exporter then serves the sample without one.
            ("example_timestamped_value_count", (env,)): 2.0,
            ("example_value_active", (env, ("id", "id-A"))): 1.0,
            ("example_value_active", (env, ("id", "id-C"))): 1.0,
            ("example_value_count", (env, ("id", "id-A"))): 1.0,
            ("example_value_count", (env, ("id", "id-C"))): 3.0,
            ("example_value_boolean", (env, ("id", "id-A"))): 1.0,
            ("example_value_boolean", (env, ("id", "id-C"))): 0.0,
        }
        assert "# TYPE example_global_value untyped" in text
        method, _, headers, _ = _Handler.seen[-1]
        assert method == "GET" and headers["X-Dummy"] == "my-test-header"
        assert headers["Accept"] == "application/json"

        # The same adapter serves a second app with another module.
        status, text = probe(proc, "animals", f"{app}/animals.json")
        got = samples(text)
        assert got[("animal_population", (("name", "lion"), ("predator", "true")))] == 123
        assert got[("animal_population", (("name", "pigeon"), ("predator", "false")))] == 789

        # epochTimestamp in milliseconds, as json_exporter reads it.
        status, text = probe(proc, "stamped", f"{app}/jobs.json")
        assert 'job_duration_seconds_last{job="backup"} 12.5 1700000000123\n' in text
        samples(text)

        # body: POST with the probe's query parameters in the template; basic auth.
        status, _, body = proc.get(
            f"/probe?module=posted&since=5m&target={quote(app + '/posted.json', safe='')}"
        )
        assert status == 200 and samples(body.decode())[("posted_total", ())] == 5.0
        method, _, headers, sent = _Handler.seen[-1]
        assert method == "POST" and json.loads(sent) == {"since": "5m"}
        assert (
            headers["Authorization"]
            == "Basic " + base64.b64encode(b"myuser:veryverysecret").decode()
        )

        # json_exporter's answers for a wrong module, no target, a failing target.
        assert probe(proc, "nope", f"{app}/data.json")[0] == 400
        assert proc.get("/probe?module=default")[0] == 400
        assert probe(proc, "default", f"{app}/missing.json")[0] == 503


def test_unknown_keys_in_a_json_exporter_config_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text("modules:\n  default:\n    metrics:\n    - name: x\n      pth: '{.a}'\n")
    res = run_program("metrics", ["--check-config", "--json-exporter-config", str(cfg)])
    assert res.returncode == 2 and b"pth: unknown key" in res.stderr
    cfg.write_text(CONFIG)
    res = run_program("metrics", ["--check-config", "--json-exporter-config", str(cfg)])
    assert res.returncode == 0, res.stderr


def test_a_bearer_token_file_is_checked_and_reread(tmp_path: Path, app: str) -> None:
    """As json_exporter's bearer_token_file: read for each probe (a rotated Secret
    is used at once). An empty or two-line file is a 503 naming the file, and no
    request goes out with it."""
    token = tmp_path / "token"
    token.write_text("\n")
    cfg = tmp_path / "config.yml"
    cfg.write_text(
        "modules:\n  default:\n    http_client_config:\n"
        f"      bearer_token_file: {token}\n"
        "    metrics:\n    - name: counter\n      path: '{ .counter }'\n"
    )
    with ProgramProcess("metrics", ["--json-exporter-config", str(cfg)], tmp=tmp_path) as p:
        p.wait_ready()
        status, body = probe(p, "default", app + "/data.json")
        assert (status, body) == (503, f"bearer_token_file {token}: empty\n")
        token.write_text("tok-1\nX-Evil: 1\n")
        status, body = probe(p, "default", app + "/data.json")
        assert (status, body) == (503, f"bearer_token_file {token}: one line expected\n")
        assert _Handler.seen == []
        token.write_text("s3cret-tok-2\n")
        status, body = probe(p, "default", app + "/data.json")
        assert status == 200 and "counter 1234" in body, body
        assert _Handler.seen[-1][2]["Authorization"] == "Bearer s3cret-tok-2"
    res = run_program("metrics", ["--check-config", "--json-exporter-config", str(cfg)])
    assert res.returncode == 0, res.stderr
    cfg.write_text(cfg.read_text().replace(f"bearer_token_file: {token}", "bearer_token: 'a b'"))
    res = run_program("metrics", ["--check-config", "--json-exporter-config", str(cfg)])
    assert res.returncode == 2
    assert b"http_client_config.bearer_token: the token holds spaces" in res.stderr


def test_a_basic_auth_password_file_is_reread_when_it_changes(tmp_path: Path, app: str) -> None:
    """json_exporter reads password_file for each request: a rotated Secret's
    password is the one the next probe sends."""
    password = tmp_path / "password"
    password.write_text("first-pass\n")
    cfg = tmp_path / "config.yml"
    cfg.write_text(
        "modules:\n  default:\n    http_client_config:\n      basic_auth:\n"
        f"        username: scraper\n        password_file: {password}\n"
        "    metrics:\n    - name: counter\n      path: '{ .counter }'\n"
    )
    sent = []
    with ProgramProcess("metrics", ["--json-exporter-config", str(cfg)], tmp=tmp_path) as p:
        p.wait_ready()
        for text in ("first-pass\n", "second-pass-longer\n"):
            password.write_text(text)
            status, body = probe(p, "default", app + "/data.json")
            assert status == 200 and "counter 1234" in body, body
            sent.append(_Handler.seen[-1][2]["Authorization"])
        password.unlink()
        status, body = probe(p, "default", app + "/data.json")
        assert status == 503 and body.startswith("Failed to read password_file"), body
    assert sent == [
        "Basic " + base64.b64encode(b"scraper:first-pass").decode(),
        "Basic " + base64.b64encode(b"scraper:second-pass-longer").decode(),
    ]
