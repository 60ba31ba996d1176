"""The proxy's credentials (issue 18), each against an upstream that verifies them.

The token endpoint and the upstreams are aiohttp servers on loopback (no OAuth2
server is packaged for Debian; these check what RFC 6749 4.4 and RFC 7523 say a
client sends). The upstream checks every credential itself: a JWT's signature
with the public key, its expiry and audience; basic and header values; and it
answers 401 to a token it does not (or no longer) accept. The tests assert on
what the upstream and the token endpoint received.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.helpers import free_port, http, wait_until
from tests.integration.test_proxy import ChaosFarm, proxy, purl, raw


def write_key(path: Path, key: Any) -> Any:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key.public_key()


class TokenEndpoint:
    """An OAuth2 token endpoint: client credentials grant, three client auth methods."""

    def __init__(self, client_id: str, secret: str = "", public_key: Any = None) -> None:
        self.port = free_port()
        self.client_id = client_id
        self.secret = secret
        self.public_key = public_key
        self.hits = 0
        self.issued = 0
        self.lifetime: int | None = 3600
        self.delay = 0.0
        self.down = False
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth/token"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth/token", self.token)
        return app

    def authenticated(self, request: web.Request, form: dict[str, str]) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            # RFC 6749 2.3.1: each part was form-urlencoded before the base64
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            return unquote_plus(user) == self.client_id and unquote_plus(pw) == self.secret
        if "client_assertion" in form:
            assert form["client_assertion_type"] == (
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            )
            claims = jwt.decode(
                form["client_assertion"],
                self.public_key,
                algorithms=["RS256", "ES256", "EdDSA"],
                audience=self.url,
                issuer=self.client_id,
                options={"require": ["exp", "iat", "jti", "sub"]},
            )
            return bool(claims["sub"] == self.client_id == form.get("client_id"))
        return form.get("client_id") == self.client_id and form.get("client_secret") == self.secret

    async def token(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.text()
        form = {k: v[0] for k, v in parse_qs(body).items()}
        self.requests.append(
            {
                "form": form,
                "auth": request.headers.get("Authorization"),
                "content_type": request.headers.get("Content-Type"),
                "accept": request.headers.get("Accept"),
            }
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        if form.get("grant_type") != "client_credentials" or not self.authenticated(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        self.issued += 1
        answer: dict[str, Any] = {"access_token": f"tok-{self.issued}", "token_type": "Bearer"}
        if self.lifetime is not None:
            answer["expires_in"] = self.lifetime
        return web.json_response(answer)


class Verifier:
    """An upstream that accepts only the credentials it is told to, and records all."""

    def __init__(self) -> None:
        self.port = free_port()
        self.valid_tokens: set[str] = set()
        self.jwt_key: Any = None
        self.jwt_audience = ""
        self.seen: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def check(self, headers: Any) -> dict[str, Any] | None:
        """The verified credential, or None to answer 401."""
        auth = headers.get("Authorization", "")
        if self.jwt_key is not None:
            if not auth.startswith("Bearer "):
                return None
            try:
                claims = jwt.decode(
                    auth[7:],
                    self.jwt_key,
                    algorithms=["RS256", "ES256", "EdDSA"],
                    audience=self.jwt_audience,
                    options={"require": ["exp", "iat", "jti"]},
                )
            except jwt.InvalidTokenError:
                return None
            return {"jwt": claims, "alg": jwt.get_unverified_header(auth[7:])["alg"]}
        if self.valid_tokens:
            token = auth.removeprefix("Bearer ")
            return {"token": token} if token in self.valid_tokens else None
        return {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        verified = self.check(request.headers)
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "headers": dict(request.headers),
                "body": len(body),
                "verified": verified,
            }
        )
        if verified is None:
            return web.Response(status=401, text="who are you\n")
        if request.path == "/redirect":
            raise web.HTTPFound(request.query["to"])
        return web.json_response({"ok": True, **verified})


@pytest.fixture
def farm() -> Iterator[ChaosFarm]:
    f = ChaosFarm()
    yield f
    f.close()


def serve(farm: ChaosFarm, thing: Any) -> Any:
    farm.serve(thing.app(), thing.port, shutdown_timeout=0.5)
    return thing


OAuth2 = Callable[..., tuple[TokenEndpoint, Verifier, list[str]]]


@pytest.fixture
def oauth2(farm: ChaosFarm, tmp_path: Path) -> OAuth2:
    """`oauth2(client_id, secret=, public_key=)`: a token endpoint, an upstream
    that accepts the first token it issues, and the proxy's flags joining
    them (with the client secret, when there is one, in a file)."""

    def make(
        client_id: str, secret: str | None = None, public_key: Any = None
    ) -> tuple[TokenEndpoint, Verifier, list[str]]:
        endpoint = serve(farm, TokenEndpoint(client_id, secret or "", public_key))
        up = serve(farm, Verifier())
        up.valid_tokens = {"tok-1"}
        argv = ["--upstream", up.url, "--oauth2-token-url", endpoint.url]
        argv += ["--oauth2-client-id", client_id]
        if secret is not None:
            path = tmp_path / "client-secret"
            path.write_text(secret + "\n")
            argv += ["--oauth2-client-secret-file", str(path)]
        return endpoint, up, argv

    return make


def many(url: str, n: int, **kw: Any) -> list[tuple[int, dict[str, str], bytes]]:
    """`n` requests at once (threads: each its own connection)."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: http(url, timeout=20, **kw), range(n)))


def test_oauth2_one_fetch_many_waiters_401_replay_trace_and_redirects(
    farm: ChaosFarm, tmp_path: Path, oauth2: OAuth2
) -> None:
    endpoint, up, argv = oauth2("app-1", secret="s3cret/&=+")
    endpoint.delay = 0.5  # requests arrive while the first token is being fetched
    other = serve(farm, Verifier())  # a host that must never see a credential
    with proxy(
        tmp_path,
        *argv,
        "--oauth2-scope",
        "read write",
        "--oauth2-audience",
        "https://api.example",
        "--replay-max-body",
        "1KiB",
    ) as p:
        # 100 requests waiting for the first token: one token request
        results = many(purl(p, "/a"), 100)
        assert [r[0] for r in results] == [200] * 100
        assert endpoint.hits == 1
        form = endpoint.requests[0]["form"]
        assert form == {
            "grant_type": "client_credentials",
            "scope": "read write",
            "audience": "https://api.example",
        }
        # client_secret_basic: id and secret form-encoded, then base64 (RFC 6749 2.3.1)
        assert (
            endpoint.requests[0]["auth"]
            == "Basic " + base64.b64encode(b"app-1:s3cret%2F%26%3D%2B").decode()
        )
        assert all(s["headers"]["Authorization"] == "Bearer tok-1" for s in up.seen)

        # the upstream stops accepting tok-1: 100 requests refused alike, one renewal,
        # each replayed once with tok-2
        endpoint.delay = 0.2
        up.valid_tokens = {"tok-2"}
        results = many(purl(p, "/b"), 100)
        assert [r[0] for r in results] == [200] * 100
        assert endpoint.hits == 2
        assert sum(1 for s in up.seen if s["verified"] == {"token": "tok-2"}) == 100

        # a body buffered within --replay-max-body is replayed whole
        endpoint.delay = 0
        up.valid_tokens = {"tok-3"}
        n_seen = len(up.seen)
        code, _, body = http(purl(p, "/post"), method="POST", data=b"x" * 1000)
        assert code == 200 and json.loads(body)["token"] == "tok-3"
        assert [(s["body"], s["verified"] is not None) for s in up.seen[n_seen:]] == [
            (1000, False),
            (1000, True),
        ]
        # a bigger body streams and cannot be replayed: the app gets the 401, and the
        # credentials are renewed for the requests after it
        up.valid_tokens = {"tok-4"}
        code, _, _ = http(purl(p, "/post"), method="POST", data=b"y" * 4096)
        assert code == 401
        wait_until(lambda: endpoint.issued == 4, 10, what="renewal after a 401")
        assert http(purl(p, "/after"))[0] == 200

        # never sent on TRACE: refused before anything reaches the upstream
        n_seen = len(up.seen)
        answer = raw(p.port, b"TRACE /x HTTP/1.1\r\nHost: a\r\n\r\n")  # type: ignore[attr-defined]
        assert answer.startswith(b"HTTP/1.1 405")
        # never to another host: a redirect is passed back, not followed ...
        answer = raw(
            p.port,  # type: ignore[attr-defined]
            f"GET /redirect?to={other.url}/stolen HTTP/1.1\r\nHost: a\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert answer.startswith(b"HTTP/1.1 302")
        assert f"\r\nLocation: {other.url}/stolen\r\n".encode() in answer
        # ... and an absolute-form request for a host that is not an upstream is refused
        answer = raw(
            p.port,  # type: ignore[attr-defined]
            f"GET {other.url}/stolen HTTP/1.1\r\nHost: 127.0.0.1:{other.port}\r\n\r\n".encode(),
        )
        assert answer.startswith(b"HTTP/1.1 403")
        assert other.seen == []
        assert [s["method"] for s in up.seen[n_seen:]] == ["GET"]  # the redirect only
        assert "s3cret" not in p.stderr() and "tok-" not in p.stderr()


def test_oauth2_endpoint_down_keeps_token_until_expiry_then_503(
    tmp_path: Path, oauth2: OAuth2
) -> None:
    endpoint, up, argv = oauth2("app-2", secret="pw")
    endpoint.lifetime = 3
    with proxy(tmp_path, *argv, "--oauth2-client-auth", "client_secret_post") as p:
        assert http(purl(p, "/x"))[0] == 200
        assert endpoint.requests[0]["form"]["client_secret"] == "pw"
        assert endpoint.requests[0]["auth"] is None
        got = time.monotonic()
        endpoint.down = True
        # renewal starts at about 80% of the lifetime and fails; the token still works
        wait_until(lambda: endpoint.hits >= 2, 10, what="a renewal attempt")
        if time.monotonic() - got < 2.5:
            assert http(purl(p, "/x"))[0] == 200
        # once it expired: 503 with the reason, and the upstream sees nothing more
        wait_until(lambda: http(purl(p, "/x"))[0] == 503, 10, what="503 after expiry")
        n_seen = len(up.seen)
        code, headers, body = http(purl(p, "/x"))
        assert code == 503
        assert headers["x-podkit-proxy"] == "credentials-unavailable"
        assert b"OAuth2" in body
        assert len(up.seen) == n_seen
        assert any(r["message"].startswith("OAuth2 access token expired") for r in p.records())


def test_oauth2_private_key_jwt(tmp_path: Path, oauth2: OAuth2) -> None:
    key = tmp_path / "client.key"
    public = write_key(key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    endpoint, _, argv = oauth2("app-3", public_key=public)
    with proxy(
        tmp_path,
        *argv,
        "--oauth2-client-auth",
        "private_key_jwt",
        "--oauth2-private-key-file",
        str(key),
    ) as p:
        code, _, body = http(purl(p, "/x"))
        assert code == 200 and json.loads(body)["token"] == "tok-1"
        form = endpoint.requests[0]["form"]
        assert form["client_id"] == "app-3" and "client_secret" not in form
        assert endpoint.requests[0]["auth"] is None


def test_basic_auth_and_header_files_reread(farm: ChaosFarm, tmp_path: Path) -> None:
    up = serve(farm, Verifier())
    basic = tmp_path / "basic"
    basic.write_text("alice:pa:ss word\n")
    key = tmp_path / "api-key"
    key.write_text("key-1\n")
    with proxy(
        tmp_path,
        "--upstream",
        up.url,
        "--basic-auth-file",
        str(basic),
        "--header-file",
        f"X-Api-Key={key}",
        "--timeout",
        "2s",
    ) as p:
        # what the app sends in these headers is replaced, never passed on
        code, _, _ = http(
            purl(p, "/x"), headers={"Authorization": "Bearer app-own", "X-Api-Key": "app-own"}
        )
        assert code == 200
        h = up.seen[-1]["headers"]
        assert h["Authorization"] == "Basic " + base64.b64encode(b"alice:pa:ss word").decode()
        assert h["X-Api-Key"] == "key-1"
        assert "app-own" not in json.dumps(up.seen[-1])
        # both files re-read when they change, as kubelet rotates a Secret
        basic.write_text("bob:pw2\n")
        key.write_text("key-2\n")

        def rotated() -> bool:
            http(purl(p, "/x"))
            h = up.seen[-1]["headers"]
            return bool(
                h["Authorization"] == "Basic " + base64.b64encode(b"bob:pw2").decode()
                and h["X-Api-Key"] == "key-2"
            )

        wait_until(rotated, 10, what="rotated credentials")
        # a broken file keeps the last good value
        key.write_text("bad\x01value\n")
        wait_until(lambda: any("keeping the old value" in r["message"] for r in p.records()), 10)
        http(purl(p, "/x"))
        assert up.seen[-1]["headers"]["X-Api-Key"] == "key-2"
        # a body small enough to be buffered for a replay, that never arrives whole: 408,
        # and nothing reached the upstream
        n_seen = len(up.seen)
        answer = raw(
            p.port,  # type: ignore[attr-defined]
            b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        assert answer.startswith(b"HTTP/1.1 408") and b"body-timeout" in answer
        assert len(up.seen) == n_seen
        # ... unless the client waits for 100 Continue: then the body streams at once
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as c:  # type: ignore[attr-defined]
            c.sendall(
                b"POST /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            assert c.recv(100).startswith(b"HTTP/1.1 100")  # aiohttp's, relayed
            c.sendall(b"hello")
            answer = b""
            while chunk := c.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and up.seen[-1]["body"] == 5
        err = p.stderr()
        assert "pw2" not in err and "key-2" not in err and "Ym9iOnB3Mg" not in err


def test_jwt_minted_per_interval_and_per_request(farm: ChaosFarm, tmp_path: Path) -> None:
    rs_key, es_key, ed_key = tmp_path / "rs.pem", tmp_path / "es.pem", tmp_path / "ed.pem"
    rs_pub = write_key(rs_key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    es_pub = write_key(es_key, ec.generate_private_key(ec.SECP256R1()))
    ed_pub = write_key(ed_key, ed25519.Ed25519PrivateKey.generate())
    ups = [serve(farm, Verifier()) for _ in range(3)]
    for u, pub in zip(ups, (rs_pub, es_pub, ed_pub), strict=True):
        u.jwt_key = pub
        u.jwt_audience = "https://api.example"
    ports = [free_port() for _ in range(3)]
    common = {"jwt-issuer": "podkit-test", "jwt-audience": "https://api.example"}
    config = tmp_path / "proxy.yaml"
    config.write_text(
        json.dumps(
            {
                "listeners": [
                    {
                        "listen": f"127.0.0.1:{ports[0]}",
                        "upstream": ups[0].url,
                        "jwt-private-key-file": str(rs_key),
                        "jwt-lifetime": "2m",
                        "jwt-claim": ["team=blue", "env=test"],
                        **common,
                    },
                    {
                        "listen": f"127.0.0.1:{ports[1]}",
                        "upstream": ups[1].url,
                        "jwt-private-key-file": str(es_key),
                        "jwt-algorithm": "ES256",
                        "jwt-per-request": True,
                        **common,
                    },
                    {
                        "listen": f"127.0.0.1:{ports[2]}",
                        "upstream": ups[2].url,
                        "jwt-private-key-file": str(ed_key),
                        "jwt-subject": "svc-a",
                        **common,
                    },
                ]
            }
        )
    )
    with proxy(tmp_path, "--config", str(config)) as _:
        for port in ports:
            for _ in range(2):
                code, _, _ = http(f"http://127.0.0.1:{port}/x")
                assert code == 200
        rs = [s["verified"] for s in ups[0].seen]
        assert [v["alg"] for v in rs] == ["RS256", "RS256"]
        claims = rs[0]["jwt"]
        assert claims["iss"] == "podkit-test" and claims["team"] == "blue"
        assert claims["env"] == "test" and claims["exp"] - claims["iat"] == 120
        assert rs[0]["jwt"]["jti"] == rs[1]["jwt"]["jti"]  # reused within half its life
        es = [s["verified"] for s in ups[1].seen]
        assert [v["alg"] for v in es] == ["ES256", "ES256"]
        assert es[0]["jwt"]["jti"] != es[1]["jwt"]["jti"]  # one per request
        ed = [s["verified"] for s in ups[2].seen]
        assert ed[0]["alg"] == "EdDSA" and ed[0]["jwt"]["sub"] == "svc-a"
        # the key is re-read when it changes: the upstream now trusts only the new one
        ups[0].jwt_key = write_key(
            rs_key, rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )

        def new_key_used() -> bool:
            return http(f"http://127.0.0.1:{ports[0]}/x")[0] == 200

        wait_until(new_key_used, 10, what="a JWT signed with the new key")


def test_health_checks_carry_a_per_request_jwt(farm: ChaosFarm, tmp_path: Path) -> None:
    """A health path behind the same auth as the app's requests: each probe gets a
    freshly minted JWT, as requests do, so the upstream stays healthy (the probe used
    to go without one, the upstream answered 401 and every request got 503)."""
    key = tmp_path / "es.pem"
    up = serve(farm, Verifier())
    up.jwt_key = write_key(key, ec.generate_private_key(ec.SECP256R1()))
    up.jwt_audience = "https://api.example"
    with proxy(
        tmp_path,
        "--upstream",
        up.url,
        "--jwt-private-key-file",
        str(key),
        "--jwt-algorithm",
        "ES256",
        "--jwt-per-request",
        "--jwt-issuer",
        "podkit-test",
        "--jwt-audience",
        "https://api.example",
        "--health-path",
        "/hz",
        "--health-interval",
        "200ms",
    ) as p:

        def probes() -> list[dict[str, Any]]:
            return [s for s in up.seen if s["path"] == "/hz"]

        wait_until(lambda: len(probes()) >= 2, 10, what="two health checks")
        assert all(s["verified"] is not None for s in probes()), probes()
        jtis = {s["verified"]["jwt"]["jti"] for s in probes()}
        assert len(jtis) == len(probes())  # minted per probe, as per request
        code, _, _ = http(purl(p, "/x"))
        assert code == 200
