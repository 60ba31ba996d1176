"""A malformed value of a secret header option is not printed in the usage error.

`--http-request-header` (waitfor) and `--webhook-header` (every program with
webhooks) are secret options: hidden from the settings logged at start. But a
value without its colon (`Authorization Bearer <token>`) was refused with a
message quoting it whole, printed to stderr at start and by --check-config,
where no scrubbing applies (nothing is registered before the flags parse).
"""

from __future__ import annotations

import pytest
from podkit.initkits.waitfor.program import WaitFor
from podkit.sidecars.reloader.program import Reloader

from podkit.runner import run

TOKEN = "Usage-err0r-T0ken-8812"


@pytest.mark.parametrize("check_config", [False, True])
def test_a_malformed_http_request_header_is_not_printed(
    check_config: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--http-request-header", f"Authorization Bearer {TOKEN}", "http://127.0.0.1:1/"]
    assert run(WaitFor, [*argv, *(["--check-config"] if check_config else [])], {}) == 2
    err = capsys.readouterr().err
    assert "--http-request-header: expected 'Name: value'" in err, err
    assert TOKEN not in err


@pytest.mark.parametrize("check_config", [False, True])
def test_a_malformed_webhook_header_is_not_printed(
    check_config: bool, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    argv = [
        "--watch", str(tmp_path),
        "--webhook-url", "http://127.0.0.1:1/",
        "--webhook-header", f"Authorization Bearer {TOKEN}",
    ]  # fmt: skip
    assert run(Reloader, [*argv, *(["--check-config"] if check_config else [])], {}) == 2
    err = capsys.readouterr().err
    assert "--webhook-header: expected 'Name: value'" in err, err
    assert TOKEN not in err
