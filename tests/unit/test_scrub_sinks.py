"""An HTTP sink's credentials never reach the dead-letter file or the log.

A refused batch is written to the dead-letter file with the server's answer
(its first 300 characters) as `error`. That file was not scrubbed as the log
is, so a 401 whose body quotes the Authorization it refused wrote a
--bearer-token-file token there whole (the log line beside it had ***). And a
sink URL's user:password@, which aiohttp sends as basic auth, was not
registered at all: neither the password nor the Basic value it makes.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from podkit.logs import _json_formatter
from podkit.sinks import NdjsonBatch, open_sink
from tests.peers.aioapp import AppServer, app_of


async def _echo_401(request: web.Request) -> web.Response:
    await request.read()
    auth = request.headers.get("Authorization", "")
    return web.json_response({"error": f"invalid credentials: {auth}"}, status=401)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with AppServer(app_of(_echo_401, "POST")) as site:
        yield site.url


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """What the sinks' logger writes, through podkit's JSON formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(_json_formatter())
    logger = logging.getLogger("podkit.sinks")
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


async def _refused(sink_url: str, tmp_path: Path, **options: object) -> str:
    sink = open_sink(sink_url, dead_letter=str(tmp_path / "dead"), **options)
    await sink.start()
    try:
        await sink.send(NdjsonBatch(b'{"message":"a"}\n', 1))
    finally:
        await sink.close()
    assert sink.dead_lettered == 1
    return (tmp_path / "dead").read_text()


async def test_a_bearer_token_quoted_by_a_401_is_not_dead_lettered(
    url: str, tmp_path: Path, written: io.StringIO
) -> None:
    token = "Sink-bearer-T0ken-5150"
    (tmp_path / "token").write_text(token + "\n")
    dead = await _refused(url, tmp_path, bearer_token_file=str(tmp_path / "token"))
    entry = json.loads(dead)
    assert entry["status"] == 401 and entry["record"] == {"message": "a"}
    assert entry["error"] == 'HTTP 401: {"error": "invalid credentials: Bearer ***"}'
    assert token not in dead and token not in written.getvalue()


async def test_a_url_password_and_its_basic_value_are_not_written(
    url: str, tmp_path: Path, written: io.StringIO
) -> None:
    password = "Sink-URL-pa55:w%2Frd"  # percent-encoded in the URL: w/rd once decoded
    basic = base64.b64encode(b"alice:Sink-URL-pa55:w/rd").decode()
    dead = await _refused(url.replace("http://", f"http://alice:{password}@"), tmp_path)
    log = written.getvalue()
    assert json.loads(dead)["error"] == 'HTTP 401: {"error": "invalid credentials: Basic ***"}'
    assert "records refused; dead-lettered" in log
    for secret in (basic, password, "Sink-URL-pa55:w/rd"):
        assert secret not in dead and secret not in log


async def test_a_token_cut_by_the_300_character_excerpt_leaves_no_prefix(
    tmp_path: Path, written: io.StringIO
) -> None:
    """The answer is cut to 300 characters before it is scrubbed: a token that
    straddled the cut left its first part in the log and the dead-letter file,
    where no registered value matched it any more."""
    token = "Straddling-T0ken-0123456789abcdefghij"

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        got = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return web.Response(status=401, text="x" * 280 + f" token {got} refused")

    (tmp_path / "token").write_text(token + "\n")
    async with AppServer(app_of(answer, "POST")) as site:
        dead = await _refused(site.url, tmp_path, bearer_token_file=str(tmp_path / "token"))
    assert json.loads(dead)["error"] == "HTTP 401: " + "x" * 280 + " token *** refused"
    for text in (dead, written.getvalue()):
        assert token[:12] not in text


async def test_an_api_key_in_the_sink_url_query_is_not_written(
    tmp_path: Path, written: io.StringIO
) -> None:
    """Datadog's intake takes its key as `?dd-api-key=`: redact_url promised to hide
    token-like query values but did not, so the key was in every line naming the
    sink (and in the dead-letter file); and aiohttp's errors quote the URL whole."""
    key = "DdApiKey0123456789abcdef"
    hops = 0

    async def answer(request: web.Request) -> web.Response:
        nonlocal hops
        await request.read()
        hops += 1
        if hops <= 11:  # one send: aiohttp follows 10 redirects, then gives up
            raise web.HTTPTemporaryRedirect(location=str(request.rel_url))
        return web.Response(status=403, text="forbidden")

    async with AppServer(app_of(answer, "POST")) as site:
        sink_url = f"{site.url}/api/v2/logs?dd-api-key={key}&ddsource=podkit"
        dead = await _refused(sink_url, tmp_path, retry_max_backoff=0.01)
    log = written.getvalue()
    assert "TooManyRedirects" in log  # the error that quotes the URL was written
    assert "dd-api-key=***&ddsource=podkit" in log
    assert json.loads(dead)["sink"].endswith("/api/v2/logs?dd-api-key=***&ddsource=podkit")
    assert key not in log and key not in dead
