"""Issue 23: `/` gives the last error's message, reason and time, for every program."""

from __future__ import annotations

import json
import re
from typing import Any

from podkit import Sidecar, register_secret
from podkit.admin import AdminServer
from podkit.httpclient import fetch


class Prog(Sidecar):
    name = "errortest"

    async def run(self) -> None:
        pass


async def index(srv: AdminServer) -> dict[str, Any]:
    res = await fetch("GET", f"http://127.0.0.1:{srv.port}/", timeout=5)
    data: dict[str, Any] = json.loads(res.body)
    return data


async def test_index_shows_the_newest_error_with_its_message_and_rfc3339_time() -> None:
    prog = Prog()
    srv = AdminServer(prog, "127.0.0.1:0")
    await srv.start()
    try:
        assert (await index(srv))["error"] is None
        register_secret("hunter2-secret")
        prog.record_error("webhook", "POST http://h/: status 503 (token hunter2-secret)")
        prog.record_error("api", "list configmaps: 403 Forbidden: grant list on configmaps")
        err = (await index(srv))["error"]
        assert err["reason"] == "api"
        assert err["message"] == "list configmaps: 403 Forbidden: grant list on configmaps"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", err["time"])
        prog.record_error("webhook", "status 503 (token hunter2-secret)")
        assert (await index(srv))["error"]["message"] == "status 503 (token ***)"
    finally:
        await srv.stop()
