"""The injector's webhook against pods its clients choose, repeated.

Anyone who can reach the webhook's port can post an AdmissionReview, and a
pod whose metadata or annotations are no mappings made pod_patch raise. The
pod is still allowed (with a warning, counted as `warned`), but each such
review wrote an error record with a traceback, unthrottled: a client could
fill the log with ~2 KB a request. One record a minute per kind now.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from podkit.sidecars.injector import Injector

from podkit.admin import Request
from podkit.runner import configure
from tests.peers.tls import make_ca


@pytest.fixture
async def injector(tmp_path: Path) -> AsyncIterator[Any]:
    tls = make_ca(tmp_path / "tls")
    inj: Any = configure(
        Injector,
        [
            "--listen=127.0.0.1:0",
            f"--cert-file={tls.server_cert}",
            f"--key-file={tls.server_key}",
            "--admin-addr=off",
        ],
        {},
    )
    await inj.setup()
    try:
        yield inj
    finally:
        await inj.cleanup()


def review(uid: str, pod: Any) -> Request:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"kind": "Pod"}, "operation": "CREATE", "object": pod},
    }
    return Request("POST", "/mutate", {}, json.dumps(body).encode())


HOSTILE = [
    {"metadata": [1], "spec": {}},
    {"metadata": {"annotations": [1]}, "spec": {"containers": []}},
    {"metadata": {"annotations": "podkit.dev/logship"}, "spec": {"containers": []}},
]


async def test_a_pod_of_the_wrong_shape_is_allowed_and_one_record_a_minute(
    injector: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for i in range(30):
        answer = await injector.mutate(review(f"u{i}", HOSTILE[i % len(HOSTILE)]))
        assert answer.status == 200
        response = json.loads(answer.body)["response"]
        assert response["uid"] == f"u{i}" and response["allowed"] is True
        assert "patch" not in response and response["warnings"]
    assert injector.m_reviews.labels("warned")._value.get() == 30
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all(r.exc_info is None for r in caplog.records)
    # one per kind of failure (AttributeError here), not one per review
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].getMessage() == "cannot inject"
    assert errors[0].__dict__["error"].startswith("AttributeError")
