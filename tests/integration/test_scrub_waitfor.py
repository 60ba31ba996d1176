"""waitfor's --http-request-header values never reach its stderr, even when an error quotes them.

The option is secret (hidden from the settings logged at start), but its values
were not registered for scrubbing: a target whose JSON answer echoes the key
(`{"error": "invalid api key <key>"}`) under a condition like `$.error == null`
had waitfor write the key in every "waiting" line and in the final "not ready".
"""

from __future__ import annotations

import base64
import json
from http.server import BaseHTTPRequestHandler

import pytest

from tests.helpers import run_program
from tests.unit.test_scrub_gitsync_auth import Answering


def _echoing(header: str, strip: str = "") -> Answering:
    def answer(h: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        got = h.headers.get(header, "").removeprefix(strip)
        return 200, json.dumps({"status": "DOWN", "error": f"invalid api key {got}"}).encode()

    return Answering(answer)


@pytest.mark.parametrize(
    ("header", "value", "echoed", "strip"),
    [
        ("X-Api-Key", "K3y-0f-the-ApI-7781", "K3y-0f-the-ApI-7781", ""),
        # the server quotes only the token, not the scheme before it
        ("Authorization", "Bearer t0ken-Only-Quoted-5520", "t0ken-Only-Quoted-5520", "Bearer "),
    ],
)
def test_a_request_header_quoted_by_the_target_is_not_written(
    header: str, value: str, echoed: str, strip: str
) -> None:
    with _echoing(header, strip) as srv:
        p = run_program(
            "waitfor",
            [
                "--timeout", "500ms",
                "--http-request-header", f"{header}: {value}",
                "--http-json", "$.error == null",
                f"http://127.0.0.1:{srv.port}/health",
            ],
        )  # fmt: skip
    stderr = p.stderr.decode()
    assert p.returncode == 124, stderr  # timed out: the target never got ready
    # the error was written, with the key replaced
    assert 'does not hold (found \\"invalid api key ***\\")' in stderr, stderr
    assert echoed not in stderr


def test_the_basic_auth_of_a_url_quoted_by_the_target_is_not_written() -> None:
    """http://user:pw@host/ sends basic auth: the Basic value was not registered."""
    basic = base64.b64encode(b"alice:Url-pa55w0rd-6021").decode()
    with _echoing("Authorization") as srv:
        p = run_program(
            "waitfor",
            [
                "--timeout", "500ms",
                "--http-json", "$.error == null",
                f"http://alice:Url-pa55w0rd-6021@127.0.0.1:{srv.port}/health",
            ],
        )  # fmt: skip
    stderr = p.stderr.decode()
    assert p.returncode == 124, stderr
    assert 'does not hold (found \\"invalid api key Basic ***\\")' in stderr, stderr
    assert basic not in stderr and "Url-pa55w0rd-6021" not in stderr


def test_a_key_cut_by_the_80_character_excerpt_leaves_no_prefix() -> None:
    """`found` is cut to 80 characters: cut before it was scrubbed, a key that
    straddled the cut left its first part unmatched in the log."""
    key = "Straddled-ApI-k3y-0123456789abcdef"

    def answer(h: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        got = h.headers.get("X-Api-Key", "")
        return 200, json.dumps({"error": "e" * 60 + f" key {got} refused"}).encode()

    with Answering(answer) as srv:
        p = run_program(
            "waitfor",
            [
                "--timeout", "500ms",
                "--http-request-header", f"X-Api-Key: {key}",
                "--http-json", "$.error == null",
                f"http://127.0.0.1:{srv.port}/health",
            ],
        )  # fmt: skip
    stderr = p.stderr.decode()
    assert p.returncode == 124, stderr
    assert " key ***" in stderr, stderr
    assert key[:10] not in stderr
