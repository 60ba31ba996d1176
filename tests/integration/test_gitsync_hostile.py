"""gitsync under hostile input: what someone who can reach the admin port can do.

Raw sockets, not an HTTP client library, so the test sends exactly the bytes an
attacker would (keep-alive floods, forged webhook signatures).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import time
from pathlib import Path

from tests.helpers import free_port, run_program, stays, wait_until
from tests.integration.test_gitsync import flags, gitsync, metric, polled, published, wait_published
from tests.peers.git import GitDaemon, GitHttp, GitRepos, cert_for
from tests.peers.tls import TLSFiles


def post_sync(port: int, headers: dict[str, str] | None = None, body: bytes = b"") -> int:
    """One POST /sync on its own connection; the status code."""
    return post_many(port, [(headers or {}, body)])[0]


def post_many(port: int, requests: list[tuple[dict[str, str], bytes]]) -> list[int]:
    """Pipelined POST /sync requests on one keep-alive connection; their status codes."""
    raw = b""
    for headers, body in requests:
        head = f"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        raw += head.encode("latin-1") + b"\r\n" + body
    codes: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        buf = b""
        while len(codes) < len(requests):
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                assert chunk, f"connection closed after {len(codes)} responses"
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            codes.append(int(lines[0].split(" ")[1]))
            length = next(
                int(v)
                for k, _, v in (x.partition(":") for x in lines)
                if k.lower() == "content-length"
            )
            while len(buf) < length:
                buf += s.recv(65536)
            buf = buf[length:]
    return codes


def _github(secret: bytes, body: bytes) -> dict[str, str]:
    sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sig}"}


def test_post_sync_needs_the_token_or_a_valid_webhook_signature(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"v": "1"})
    root = tmp_path / "root"
    link = root / "app"
    token = tmp_path / "token"
    token.write_text("s3cret-sync-token\n")
    with gitsync(
        tmp_path, *flags(repo=git_daemon.url("app"), root=root, period="1h", sync_token_file=token)
    ) as p:
        p.wait_ready()
        sha1 = up.head()
        wait_published(link, sha1)
        port = p.admin_port
        assert port is not None
        fetches = metric(p, "podkit_gitsync_fetches_total")
        sha2 = up.commit_push({"v": "2"})
        body = b'{"ref": "refs/heads/main"}'
        forged = [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer s3cret-sync-toke"},
            {"X-Gitlab-Token": "s3cret-sync-token-and-more"},
            _github(b"not-the-secret", body),
            {"X-Hub-Signature-256": "sha256=" + "0" * 64},
            {"Authorization": "Basic czNjcmV0LXN5bmMtdG9rZW4="},
        ]
        for headers in forged:
            assert post_sync(port, headers, body) == 401, headers
        # A signature over another body does not carry over to this one.
        assert post_sync(port, _github(b"s3cret-sync-token", b"{}"), body) == 401
        assert metric(p, "podkit_gitsync_sync_requests_total", result="unauthorized") == 8
        assert published(link) == sha1

        # GitHub's signature with the secret: a sync.
        assert post_sync(port, _github(b"s3cret-sync-token", body), body) == 202
        wait_published(link, sha2, 10)
        # GitLab's header and a bearer token work too.
        sha3 = up.commit_push({"v": "3"})
        assert post_sync(port, {"X-Gitlab-Token": "s3cret-sync-token"}) == 202
        wait_published(link, sha3, 10)
        # The refused requests started no git: syncs run one after another and an
        # asked-for sync always fetches, so once sha3 (pushed after all of them)
        # is published, every sync they could have started has fetched.
        assert metric(p, "podkit_gitsync_fetches_total") == fetches + 2
        assert metric(p, "podkit_gitsync_sync_requests_total", result="accepted") == 2
        # A rotated secret is read on the next request: the old one is refused.
        token.write_text("rotated-token\n")
        sha4 = up.commit_push({"v": "4"})
        assert post_sync(port, {"Authorization": "Bearer s3cret-sync-token"}) == 401
        assert post_sync(port, {"Authorization": "Bearer rotated-token"}) == 202
        wait_published(link, sha4, 10)
        # An empty secret file refuses everything, the empty token included.
        token.write_text("")
        assert post_sync(port, {"Authorization": "Bearer "}) == 401
        assert post_sync(port, {"X-Gitlab-Token": ""}) == 401
        # The secret never shows in the log.
        assert "s3cret-sync-token" not in p.stderr()
        assert "rotated-token" not in p.stderr()


def test_post_sync_flood_is_rate_limited_and_coalesced(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"v": "1"})
    root = tmp_path / "root"
    with gitsync(
        tmp_path, "--repo", git_daemon.url("app"), "--root", str(root), "--period", "1h"
    ) as p:
        p.wait_ready()
        wait_published(root / "app", up.head())
        fetches = metric(p, "podkit_gitsync_fetches_total")
        up.commit_push({"v": "2"})
        start = time.monotonic()
        assert p.admin_port is not None
        codes = post_many(p.admin_port, [({}, b"")] * 200)
        elapsed = time.monotonic() - start
        accepted = codes.count(202)
        # A small burst, then 429 (the bucket refills one per second).
        assert set(codes) == {202, 429}
        assert 1 <= accepted <= 5 + int(elapsed) + 1
        assert codes.count(429) == 200 - accepted
        wait_published(root / "app", up.head(), 10)
        # Accepted requests coalesce: one sync running, at most one queued behind it.
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="success") >= 2, 10)
        coalesced = metric(p, "podkit_gitsync_sync_requests_total", result="coalesced")
        # The queued sync may still be starting: no later event marks "no more
        # syncs", so the bound is sampled over a window rather than looked at once.
        assert stays(
            lambda: metric(p, "podkit_gitsync_fetches_total") - fetches <= accepted - coalesced,
            0.5,
        ), (metric(p, "podkit_gitsync_fetches_total") - fetches, accepted, coalesced)
        assert metric(p, "podkit_gitsync_sync_requests_total", result="limited") == 200 - accepted
        # Logged once per interval, not once per request.
        limited = [r for r in p.records() if r.get("message") == "POST /sync rate-limited"]
        assert len(limited) == 1
        requested = [r for r in p.records() if r.get("message") == "sync requested"]
        assert len(requested) == 1


def test_https_to_a_certificate_for_another_host_is_refused(
    tmp_path: Path, git_repos: GitRepos, tls_files: TLSFiles
) -> None:
    """Issue 25: git over https checks the server's name, not only its CA. The same
    server with a certificate naming 127.0.0.1 is the control: it publishes."""
    up = git_repos.create("app", {"v": "1"})
    wrong = cert_for(tls_files.ca, tls_files.ca_key, tmp_path, "other.example.invalid")
    for tls, ok in (((tls_files.server_cert, tls_files.server_key), True), (wrong, False)):
        srv = GitHttp(git_repos.base, free_port(), None, None, tls=tls).start()
        root = tmp_path / f"root-{ok}"
        try:
            p = run_program(
                "gitsync",
                flags(repo=srv.url("app"), root=root, one_time=True, admin_addr="off"),
                # git's variable (it wins over http.sslCAInfo): the test CA, and only it.
                env={"GIT_SSL_CAINFO": str(tls_files.ca)},
                timeout=60,
            )
        finally:
            srv.stop()
        err = p.stderr.decode()
        if ok:
            assert p.returncode == 0, err
            assert os.path.basename(os.readlink(root / "app")) == up.head()
        else:
            assert p.returncode == 1, err
            assert "other.example.invalid" in err or "certificate subject name" in err, err
            assert not os.path.lexists(root / "app")
            assert os.listdir(root / ".worktrees") == []
