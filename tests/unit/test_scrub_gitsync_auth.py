"""gitsync's renewed credentials are scrubbed, and only the latest two of each are held.

The GitHub App installation token (slot ("github-app token", the Auth), renewed
hourly), the app's JWT that mints it (slot ("github-app jwt", key file, the
GitHubApp)), and the password an --askpass-url answers (slot ("askpass", url,
the Auth), asked before every sync) each
register under a slot: after two renewals the value of two renewals ago is no
longer held (a week of hourly tokens would otherwise make every log line scan
them all), while the current one and the one it replaced (a request in flight
may still name it) are scrubbed. Real Auth objects, real HTTP on loopback.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from podkit.sidecars.gitsync import github_app
from podkit.sidecars.gitsync.auth import Auth
from podkit.sidecars.gitsync.errors import GitError
from podkit.sidecars.gitsync.github_app import GitHubApp

from podkit import secrets


class Answering:
    """A loopback HTTP server whose every answer `answer(handler)` makes: (status, body)."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], tuple[int, bytes]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _any(self) -> None:
                status, body = answer(self)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Answering:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeGitHub:
    """GitHub's installation-token endpoint: records each app JWT, hands out
    ghs_<n> tokens that expire within gitsync's refresh margin (so each sync
    mints anew), or with `echo`, answers an expires_at that echoes the
    Authorization header (a broken proxy or API in front of it)."""

    def __init__(self, echo: bool = False) -> None:
        self.jwts: list[str] = []
        self.tokens: list[str] = []
        self.echo = echo

    def answer(self, h: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        auth = h.headers.get("Authorization", "")
        assert auth.startswith("Bearer ") and h.path == "/app/installations/42/access_tokens"
        self.jwts.append(auth[7:])
        token = f"ghs_Rot8tedInstallTok{len(self.jwts):03d}"
        self.tokens.append(token)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 200))
        body = {"token": token, "expires_at": auth if self.echo else expires}
        return 201, json.dumps(body).encode()


def rsa_pem(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1, as GitHub gives it
            serialization.NoEncryption(),
        )
    )
    return path


class HourlyClock:
    """github_app's `time` module with a clock that the test moves: an hour
    between syncs gives each mint its own JWT (iat and exp are whole seconds,
    and RS256 signs deterministically, so two in one second are the same)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


@pytest.fixture
def auth_cleanup() -> Iterator[list[Auth]]:
    made: list[Auth] = []
    yield made
    for a in made:
        a.cleanup()


def test_github_app_token_and_jwt_renewed_twice_hold_the_latest_two(
    tmp_path: Path, auth_cleanup: list[Auth], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa_pem(tmp_path / "app.pem")
    gh = FakeGitHub()
    clock = HourlyClock()
    monkeypatch.setattr(github_app, "time", clock)
    with Answering(gh.answer) as srv:
        app = GitHubApp(str(key), "12345", "42", base_url=f"http://127.0.0.1:{srv.port}/")
        a = Auth("https://git.invalid/o/r", github_app=app)
        auth_cleanup.append(a)
        a.setup()
        for _ in range(3):  # the first mint and two renewals, one before each sync
            clock.now += 3600
            env = a.env()
            assert env["PODKIT_GITSYNC_ASKPASS_USER"] == "x-access-token"
            assert Path(env["PODKIT_GITSYNC_ASKPASS_FILE"]).read_text() == gh.tokens[-1] + "\n"
    assert len(set(gh.tokens)) == len(set(gh.jwts)) == 3
    t0, t1, t2 = gh.tokens
    assert secrets._slots[("github-app token", id(a))] == (t2, t1)
    assert t0 not in secrets._values
    assert secrets.scrub(f"{t0} {t1} {t2}") == f"{t0} *** ***"
    j0, j1, j2 = gh.jwts
    assert secrets._slots[("github-app jwt", str(key), id(app))] == (j2, j1)
    assert j0 not in secrets._values
    assert secrets.scrub(f"{j0} {j1} {j2}") == f"{j0} *** ***"


def test_the_app_jwt_is_scrubbed_from_an_error_that_echoes_it(
    tmp_path: Path, auth_cleanup: list[Auth]
) -> None:
    """time.strptime's error quotes the expires_at it could not read: an answer
    that echoes the request's Authorization puts the app's JWT in the error."""
    key = rsa_pem(tmp_path / "app.pem")
    gh = FakeGitHub(echo=True)
    with Answering(gh.answer) as srv:
        app = GitHubApp(str(key), "12345", "42", base_url=f"http://127.0.0.1:{srv.port}/")
        a = Auth("https://git.invalid/o/r", github_app=app)
        auth_cleanup.append(a)
        a.setup()
        with pytest.raises(GitError) as err:
            a.env()
    assert gh.jwts[0] in str(err.value)  # the error does name it...
    assert secrets.scrub(str(err.value)) == (
        "GitHub App token: time data 'Bearer ***' does not match format '%Y-%m-%dT%H:%M:%SZ'"
    )  # ...and every log line it reaches has it replaced


def test_askpass_url_password_renewed_twice_holds_the_latest_two(
    auth_cleanup: list[Auth],
) -> None:
    passwords: list[str] = []

    def answer(h: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        passwords.append(f"Askp4ss-rotated-{len(passwords):03d}")
        return 200, f"username=alice\npassword={passwords[-1]}\n".encode()

    with Answering(answer) as srv:
        url = f"http://127.0.0.1:{srv.port}/creds"
        a = Auth("https://git.invalid/o/r", askpass_url=url)
        auth_cleanup.append(a)
        a.setup()
        for _ in range(3):  # asked before every sync
            env = a.env()
            assert Path(env["PODKIT_GITSYNC_ASKPASS_FILE"]).read_text() == passwords[-1] + "\n"
    p0, p1, p2 = passwords
    assert secrets._slots[("askpass", url, id(a))] == (p2, p1)
    assert p0 not in secrets._values
    assert secrets.scrub(f"{p0} {p1} {p2}") == f"{p0} *** ***"


def test_repositories_with_their_own_app_tokens_do_not_evict_each_other(
    tmp_path: Path, auth_cleanup: list[Auth], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `repos:` config runs one Auth per repository, each minting its own
    installation token (and asking --askpass-url) before its syncs: under one
    shared slot, two other repositories' renewals pushed the first one's
    current token, still in use, out of the scrubbed values."""
    key = rsa_pem(tmp_path / "app.pem")
    gh = FakeGitHub()
    clock = HourlyClock()
    monkeypatch.setattr(github_app, "time", clock)
    passwords: list[str] = []

    def ask(h: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        passwords.append(f"Askp4ss-per-repo-{len(passwords):03d}")
        return 200, f"password={passwords[-1]}\n".encode()

    with Answering(gh.answer) as srv, Answering(ask) as creds:
        url = f"http://127.0.0.1:{creds.port}/creds"
        by_app, by_url = [], []
        for name in ("a", "b", "c"):
            app = GitHubApp(str(key), "12345", "42", base_url=f"http://127.0.0.1:{srv.port}/")
            by_app.append(Auth(f"https://git.invalid/o/{name}", github_app=app))
            by_url.append(Auth(f"https://git.invalid/o/{name}", askpass_url=url))
        for a in by_app + by_url:
            auth_cleanup.append(a)
            a.setup()
        by_app[0].env()
        by_url[0].env()
        token_a, password_a = gh.tokens[-1], passwords[-1]
        for a in by_app[1:] + by_url[1:]:  # the other repositories sync, twice each
            for _ in range(2):
                clock.now += 3600
                a.env()
    assert len(set(gh.tokens)) == len(set(passwords)) == 5
    # repository a's token and password are still the ones it uses: still scrubbed
    assert secrets.scrub(f"{token_a} {password_a}") == "*** ***"
