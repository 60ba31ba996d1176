"""The guard in front of POST /sync: secrets compared right, a bucket that refills."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from podkit.sidecars.gitsync.triggers import SYNC_BURST, TokenBucket, refusal

from podkit.admin import Request
from podkit.secrets import SecretFile


def req(headers: dict[str, str], body: bytes = b"") -> Request:
    return Request("POST", "/sync", {k.lower(): v for k, v in headers.items()}, body)


def sig(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def test_without_a_token_file_every_request_may_ask() -> None:
    assert refusal(req({}), None) is None


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({}, False),
        ({"Authorization": "Bearer tök-en"}, True),
        ({"Authorization": "bearer tök-en"}, True),
        ({"Authorization": "Bearer tök-e"}, False),
        ({"Authorization": "Basic tök-en"}, False),
        ({"X-Gitlab-Token": "tök-en"}, True),
        ({"X-Gitlab-Token": "tök-en "}, True),  # the admin server strips header values
        ({"X-Gitlab-Token": "x"}, False),
        ({"X-Hub-Signature-256": sig("tök-en".encode(), b"payload")}, True),
        ({"X-Hub-Signature-256": sig("tök-en".encode(), b"payload").upper()}, True),
        ({"X-Hub-Signature-256": sig(b"other", b"payload")}, False),
        ({"X-Hub-Signature-256": sig("tök-en".encode(), b"payloaD")}, False),
        ({"X-Hub-Signature": "sha1=" + "0" * 40}, False),  # SHA-1 signatures: not enough
    ],
)
def test_token_header_forms(tmp_path: Path, headers: dict[str, str], ok: bool) -> None:
    f = tmp_path / "t"
    f.write_text("tök-en\n")
    # Header values arrive decoded as latin-1 from the raw bytes.
    raw = {k: v.encode().decode("latin-1") for k, v in headers.items()}
    if "x-gitlab-token" in {k.lower() for k in raw}:
        raw = {k: v.strip() for k, v in raw.items()}
    assert (refusal(req(raw, b"payload"), SecretFile(f)) is None) is ok


def test_an_empty_or_missing_token_file_refuses_everything(tmp_path: Path) -> None:
    f = tmp_path / "t"
    f.write_text("\n")
    token = SecretFile(f)
    assert refusal(req({"Authorization": "Bearer "}), token) is not None
    assert refusal(req({"X-Gitlab-Token": ""}), token) is not None
    assert refusal(req({"X-Hub-Signature-256": sig(b"", b"")}), token) is not None
    f.unlink()
    assert refusal(req({"X-Gitlab-Token": ""}), token) == "--sync-token-file unreadable"


def test_bucket_allows_a_burst_then_one_per_refill() -> None:
    now = [0.0]
    b = TokenBucket(clock=lambda: now[0])
    assert [b.take() for _ in range(SYNC_BURST)] == [0.0] * SYNC_BURST
    assert b.take() == pytest.approx(1.0)
    now[0] += 0.5
    assert b.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert b.take() == 0.0 and b.take() > 0
    now[0] += 3600  # never more than the burst, however long it was idle
    assert [b.take() == 0.0 for _ in range(SYNC_BURST + 1)] == [True] * SYNC_BURST + [False]
