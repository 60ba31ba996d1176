"""podkit's json_exporter mode against the real json_exporter, side by side.

Both read the same `modules:` config file and probe the same local app with
`GET /probe?module=NAME&target=URL`; the answers must hold the same series,
values and sample timestamps. First json_exporter's own example
(examples/config.yml and data.json at the built tag, read from its source,
not copied here), then the modules of tests/integration/test_metrics_json_exporter
(top-level lists, `valuetype`, millisecond `epochTimestamp`, templated POST
bodies with basic auth).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from podkit.testing import http
from tests.conformance.compare import diff, normalise
from tests.conformance.exporters import json_exporter, json_exporter_examples
from tests.helpers import ProgramProcess, free_port, wait_until
from tests.integration.test_metrics_json_exporter import CONFIG, _Handler
from tests.integration.test_metrics_json_exporter import app as app


class Pair:
    def __init__(self, tmp: Path, config: Path) -> None:
        self.tmp = tmp
        self.config = config
        self.web = free_port()

    def __enter__(self) -> Pair:
        self.log = (self.tmp / "json_exporter.log").open("wb")
        self.je = subprocess.Popen(
            [
                json_exporter(),
                f"--config.file={self.config}",
                f"--web.listen-address=127.0.0.1:{self.web}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.pk = ProgramProcess(
            "metrics", ["--json-exporter-config", str(self.config)], tmp=self.tmp
        ).start()
        self.pk.wait_ready()
        wait_until(self._up, what="json_exporter serving")
        return self

    def _up(self) -> bool:
        assert self.je.poll() is None, (self.tmp / "json_exporter.log").read_text()
        try:
            return http(f"http://127.0.0.1:{self.web}/metrics")[0] == 200
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        self.pk.stop()
        self.je.terminate()
        self.je.wait(10)
        self.log.close()

    def same(
        self, module: str, target: str, extra: str = "", stamped: frozenset[str] = frozenset()
    ) -> dict[Any, Any]:
        """The two probes agree; `stamped`: names where only podkit serves a
        timestamp (a JSON number of milliseconds, docs/metrics.md)."""
        q = f"/probe?module={module}&target={quote(target, safe='')}{extra}"
        je_status, _, je_body = http(f"http://127.0.0.1:{self.web}{q}")
        pk_status, _, pk_body = self.pk.get(q)
        assert (pk_status, je_status) == (200, 200), (pk_body, je_body)
        pk, je = normalise(pk_body.decode()), normalise(je_body.decode())
        for key, (value, ts) in list(pk.items()):
            if key[0] in stamped and ts is not None and je.get(key) == (value, None):
                pk[key] = (value, None)
        problems = diff(pk, je)
        assert not problems, "podkit and json_exporter differ:\n" + "\n".join(problems)
        assert pk, "nothing was compared"
        return pk


@pytest.fixture
def example(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    ex = json_exporter_examples()
    yield ex / "config.yml", json.loads((ex / "data.json").read_text())


def test_json_exporter_example_config_and_document(
    tmp_path: Path, app: str, example: tuple[Path, Any]
) -> None:
    config, data = example
    # The app serves the example document as it is.
    _Handler.docs = {"/example.json": data}
    with Pair(tmp_path, config) as pair:
        got = pair.same("default", f"{app}/example.json")
        assert any(k[0] == "example_value_count" for k in got)


def test_more_modules(tmp_path: Path, app: str) -> None:
    config = tmp_path / "config.yml"
    # json_exporter v0.6.0 has no allow_missing_key (podkit accepts it).
    config.write_text(CONFIG.replace("      allow_missing_key: true\n", ""))
    with Pair(tmp_path, config) as pair:
        pair.same("default", f"{app}/data.json")
        pair.same("animals", f"{app}/animals.json")
        got = pair.same(
            "stamped", f"{app}/jobs.json", stamped=frozenset({"job_duration_seconds_last"})
        )
        assert got[("job_duration_seconds_last", (("job", "backup"),))][0] == 12.5
        pair.same("posted", f"{app}/posted.json", "&since=5m")


NUMBERS = """
modules:
  numbers:
    metrics:
    - name: item
      type: object
      path: '{.items[*]}'
      labels:
        id: '{.id}'
        small: '{.small}'
        neg: '{.neg}'
        big: '{.big}'
        flag: '{.flag}'
        text: 'n-{.name}'
      values:
        value: '{.v}'
        text_number: '{.s}'
        bool: '{.flag}'
    - name: names
      path: '{.items[*].name}'
      labels: {all: '{.items[*].name}'}
"""


def test_numbers_as_go_prints_them(tmp_path: Path, app: str) -> None:
    # Every JSON number is a float64 to json_exporter: labels show Go's %v of it.
    _Handler.docs = {
        "/numbers.json": {
            "items": [
                {
                    "id": 1234567,
                    "small": 0.00001,
                    "neg": -0.0,
                    "big": 12345678901234567890,
                    "flag": True,
                    "name": "a",
                    "v": 1e6,
                    "s": "2.5",
                },
                {
                    "id": 999999,
                    "small": 0.5,
                    "neg": -12,
                    "big": 1e21,
                    "flag": False,
                    "name": "b",
                    "v": 0.1,
                    "s": "7",
                },
            ]
        }
    }
    config = tmp_path / "config.yml"
    config.write_text(NUMBERS)
    with Pair(tmp_path, config) as pair:
        got = pair.same("numbers", f"{app}/numbers.json")
        assert any(dict(k[1]).get("id") == "1.234567e+06" for k in got)
