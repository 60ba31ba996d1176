"""JWTs the proxy signs itself are bearer credentials until they expire: scrubbed.

A --jwt-* token (per request or per interval) and the private_key_jwt client
assertion sent to an OAuth2 token endpoint are registered with
podkit.secrets as they are signed, each signer under one slot: per-request
minting keeps the latest two, not one per request for the process's life.

The proxy has no code path today that writes a minted JWT into a log (its
error texts do not echo request heads, and the token endpoint's error code
is cut to 64 characters); these tests show that a record which does name
one is written scrubbed by the real formatter, and that the slot forgets
what is two signatures old.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from podkit.ambassadors.proxy import Proxy
from podkit.ambassadors.proxy.credentials import Injector
from podkit.ambassadors.proxy.oauth2 import OAuth2Client
from podkit.ambassadors.proxy.settings import Settings

from podkit import secrets
from podkit.logs import _json_formatter
from podkit.runner import configure
from tests.integration.test_proxy_credentials import TokenEndpoint, write_key
from tests.peers.aioapp import AppServer


def _cfg(*argv: str) -> Settings:
    p = configure(Proxy, ["--upstream", "http://a:1", *argv], {})
    assert isinstance(p, Proxy)
    return p.listener_settings[0]


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """What the proxy's logger writes, through podkit's JSON formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(_json_formatter())
    logger = logging.getLogger("podkit.proxy")
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


def _bearer(line: bytes) -> str:
    assert line.startswith(b"Authorization: Bearer ") and line.endswith(b"\r\n")
    return line[22:-2].decode()


def test_per_request_jwts_are_scrubbed_and_only_the_latest_two_are_held(
    tmp_path: Path, written: io.StringIO
) -> None:
    key = tmp_path / "key"
    public = write_key(key, ed25519.Ed25519PrivateKey.generate())
    inj = Injector(_cfg("--jwt-private-key-file", str(key), "--jwt-per-request"), lambda: None)
    inj.load()
    assert inj.per_request is not None and inj.jwt is not None
    minted = [_bearer(inj.per_request()) for _ in range(6)]
    for token in minted:
        jwt.decode(token, public, algorithms=["EdDSA"])  # real signatures, all different
    assert len(set(minted)) == 6
    # one slot for the minter: the current JWT and the one before it, not six
    assert secrets._slots[inj.jwt.key.slot] == (minted[5], minted[4])
    assert minted[3] not in secrets._values and minted[5] in secrets._values
    # a record naming the request's JWT (an error echoing the header) is written without it
    logging.getLogger("podkit.proxy").warning(
        "upstream refused", extra={"error": f"401: bad token {minted[5]} (prev {minted[4]})"}
    )
    line = written.getvalue()
    assert minted[5] not in line and minted[4] not in line
    assert "bad token *** (prev ***)" in line


def test_interval_jwts_keep_the_current_and_the_previous_one(tmp_path: Path) -> None:
    """Renewed at half its lifetime, the previous JWT is still valid for the other half."""
    key = tmp_path / "key"
    write_key(key, ec.generate_private_key(ec.SECP256R1()))
    inj = Injector(_cfg("--jwt-private-key-file", str(key)), lambda: None)
    inj.load()
    assert inj.jwt is not None and inj.per_request is None
    first = _bearer(inj.lines)
    seen = [first]
    for _ in range(2):
        inj.jwt.renew_at = 0.0  # due now
        inj.tick()
        seen.append(_bearer(inj.lines))
    assert len(set(seen)) == 3
    assert secrets.scrub(" ".join(seen)) == f"{first} *** ***"
    assert secrets._slots[inj.jwt.key.slot] == (seen[2], seen[1])


def test_two_minters_with_one_key_file_do_not_evict_each_other(tmp_path: Path) -> None:
    key = tmp_path / "key"
    write_key(key, ed25519.Ed25519PrivateKey.generate())
    cfg = _cfg("--jwt-private-key-file", str(key), "--jwt-per-request")
    a, b = Injector(cfg, lambda: None), Injector(cfg, lambda: None)
    a.load()
    b.load()
    assert a.per_request is not None and b.per_request is not None
    held = _bearer(a.per_request())
    for _ in range(3):
        b.per_request()  # the other listener's traffic
    assert secrets.scrub(held) == "***"


async def test_private_key_jwt_assertions_are_scrubbed_per_client(tmp_path: Path) -> None:
    key = tmp_path / "key"
    public = write_key(key, ec.generate_private_key(ec.SECP256R1()))
    endpoint = TokenEndpoint("cid", public_key=public)
    s = _cfg(
        "--oauth2-token-url",
        endpoint.url,
        "--oauth2-client-id",
        "cid",
        "--oauth2-client-auth",
        "private_key_jwt",
        "--oauth2-private-key-file",
        str(key),
    )
    c = OAuth2Client(s, lambda: None, rng=random.Random(1))
    c.check_files()
    async with AppServer(endpoint.app(), endpoint.port):
        for _ in range(3):
            assert await c.refresh(5.0), c.error
    sent = [r["form"]["client_assertion"] for r in endpoint.requests]
    assert len(sent) == 3 and len(set(sent)) == 3
    assert c.key is not None and c.key.slot[0] == "oauth2 client assertion"
    assert secrets._slots[c.key.slot] == (sent[2], sent[1])
    assert secrets.scrub(" ".join(sent)) == f"{sent[0]} *** ***"


async def test_listeners_with_one_oauth2_client_do_not_evict_each_others_token(
    tmp_path: Path,
) -> None:
    """--config listeners that share a token URL and client id each fetch their own
    token: under one slot, two others' renewals pushed the first one's current
    token, still sent on every request, out of the scrubbed values."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    s = _cfg(
        "--oauth2-token-url",
        "http://127.0.0.1:1/token",
        "--oauth2-client-id",
        "cid",
        "--oauth2-client-secret-file",
        str(secret),
    )
    issued = iter(f"Shared-client-tok-{i:03d}" for i in range(100))

    async def request() -> tuple[str, float | None]:
        return next(issued), 3600.0

    clients = [OAuth2Client(s, lambda: None, rng=random.Random(1)) for _ in range(3)]
    for c in clients:
        c._request = request  # type: ignore[method-assign]
    assert await clients[0].refresh(1.0)
    first = clients[0].token
    for c in clients[1:]:
        for _ in range(2):
            assert await c.refresh(1.0)
    assert first is not None and clients[0].token == first
    assert secrets.scrub(first) == "***"
