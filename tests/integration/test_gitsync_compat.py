"""git-sync v4.7 pod specs run unchanged: each test is spelled the way git-sync users write it.

The first one is the Apache Airflow chart's git-sync container (env from a
Secret through secretKeyRef, a probe on --http-bind); the others take one
flag family each, against the real servers of tests/peers/git.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.helpers import ProgramProcess, free_port, run_program, wait_until
from tests.integration.test_gitsync import (
    _ps,
    flags,
    gitsync,
    metric,
    polled,
    published,
    wait_published,
)
from tests.peers.git import GitDaemon, GitHttp, GitRepos, Sshd


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def test_airflow_chart_env_spec(tmp_path: Path, git_repos: GitRepos, git_http: GitHttp) -> None:
    """The Airflow chart's git-sync sidecar: GITSYNC_* env, password from a Secret
    in GITSYNC_PASSWORD, probes on GITSYNC_HTTP_BIND."""
    up = git_repos.create("dags", {"dag.py": "1\n"})
    assert git_http.password
    secret = git_http.password
    bind = free_port()
    envdump = tmp_path / "hook-env"
    root = str(tmp_path / "git")
    # As the chart renders it: v3 and v4 names side by side, credentials from a Secret.
    env = {
        "GIT_SYNC_REV": "HEAD",
        "GITSYNC_REF": "main",
        "GIT_SYNC_BRANCH": "main",
        "GIT_SYNC_REPO": git_http.url("dags"),
        "GITSYNC_REPO": git_http.url("dags"),
        "GIT_SYNC_DEPTH": "1",
        "GITSYNC_DEPTH": "1",
        "GIT_SYNC_ROOT": root,
        "GITSYNC_ROOT": root,
        "GIT_SYNC_DEST": "repo",
        "GITSYNC_LINK": "repo",
        "GIT_SYNC_ADD_USER": "true",
        "GITSYNC_ADD_USER": "true",
        "GITSYNC_PERIOD": "1s",
        "GIT_SYNC_MAX_SYNC_FAILURES": "0",
        "GITSYNC_MAX_FAILURES": "0",
        "GIT_SYNC_USERNAME": "alice",
        "GITSYNC_USERNAME": "alice",
        "GIT_SYNC_PASSWORD": secret,
        "GITSYNC_PASSWORD": secret,
        # Not the chart's, but how its users add a probe and a hook:
        "GITSYNC_HTTP_BIND": f"127.0.0.1:{bind}",
        "GITSYNC_EXECHOOK_COMMAND": f"sh -c 'env > {envdump}'",
        "GITSYNC_NOT_A_FLAG": "x",
    }
    p = ProgramProcess("gitsync", [], tmp=tmp_path, env=env).start()
    try:
        samples = []
        link = tmp_path / "git" / "repo"
        deadline = time.monotonic() + 20
        while published(link) != up.head():
            samples.append(_ps())
            assert time.monotonic() < deadline, p.stderr()
            time.sleep(0.01)
        wait_until(lambda: http_status(f"http://127.0.0.1:{bind}/") == 200, 10)
        sha2 = up.commit_push({"dag.py": "2\n"})
        wait_published(link, sha2, 10)
        wait_until(envdump.exists, 10)
        logs = p.stderr()
    finally:
        p.stop()
    # The secret: in no child's argv, no child's environment, no log line.
    for s in samples:
        assert secret not in s
    assert secret not in envdump.read_text()
    assert secret not in logs
    assert "prefer --password-file" in logs
    # Unknown git-sync-looking variables: one warning each, never silence.
    assert "GITSYNC_NOT_A_FLAG is not a setting" in logs
    assert "GIT_SYNC_REPO is git-sync v3's name" in logs
    assert "--branch is deprecated (git-sync v3); use --ref" in logs


def test_http_bind_is_503_until_the_first_success(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    bind = free_port()
    root = tmp_path / "root"
    with gitsync(
        tmp_path,
        *flags(
            repo=git_daemon.url("later"),
            root=root,
            period="100ms",
            http_bind=f"127.0.0.1:{bind}",
            http_metrics=True,
            http_pprof=True,
        ),
    ) as p:
        # A deadline, not a pace: 10 s ran out once in a CI dry run at load ~10.
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="error") >= 1, 30)
        assert http_status(f"http://127.0.0.1:{bind}/") == 503
        up = git_repos.create("later", {"v": "1"})
        wait_published(root / "later", up.head(), 10)
        wait_until(lambda: http_status(f"http://127.0.0.1:{bind}/") == 200, 10)
        with urllib.request.urlopen(f"http://127.0.0.1:{bind}/metrics", timeout=5) as r:
            assert b"podkit_gitsync_syncs_total" in r.read()
        assert "no pprof endpoints" in p.stderr()


def test_v3_flags_link_elsewhere_error_file_group_write(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    """git-sync v3 spellings (--branch, --dest, --wait, --max-sync-failures) with
    v4's --error-file, --group-write, --git-config and a --link in another directory."""
    up = git_repos.create("app", {"v": "1"})
    other = up.commit({"v": "release"})
    subprocess.run(["git", "push", "-q", "origin", "HEAD:refs/heads/release"], cwd=up.work)
    root = tmp_path / "root"
    link = tmp_path / "elsewhere" / "current"
    errfile = root / "errors" / "last.json"
    real = git_daemon.url("app")
    fake = "git://fake.invalid/app.git"
    p = gitsync(
        tmp_path,
        *flags(
            repo=fake,
            git_config=f'"url.{real}.insteadOf":"{fake}",http.sslVerify:false',
            root=root,
            branch="release",
            dest=link,
            wait="0.1",
            max_sync_failures="-1",
            error_file="errors/last.json",
            group_write=True,
        ),
    ).start()
    try:
        wait_published(link, other, 20)
        assert (link / "v").read_text() == "release"
        # A relative symlink from another directory.
        assert not os.path.isabs(os.readlink(link))
        mode = os.stat(link / "v").st_mode
        assert mode & stat.S_IWGRP, oct(mode)
        logs = p.stderr()
        for old, new in (("branch", "ref"), ("dest", "link"), ("wait", "period")):
            assert f"--{old} is deprecated (git-sync v3); use --{new}" in logs
        assert not errfile.exists()
        # The branch goes away: the error file holds the error; back: removed.
        subprocess.run(["git", "update-ref", "-d", "refs/heads/release"], cwd=up.bare, check=True)
        wait_until(errfile.exists, 10)
        record = json.loads(errfile.read_text())
        assert "release" in record["error"] and record["failCount"] >= 1
        assert [n for n in os.listdir(errfile.parent) if n != "last.json"] == []
        subprocess.run(["git", "update-ref", "refs/heads/release", other], cwd=up.bare, check=True)
        wait_until(lambda: not errfile.exists(), 10)
    finally:
        p.stop()


def test_error_file_on_a_full_disk_stays_whole(tmp_path: Path) -> None:
    """A tmpfs filled to the last byte: the old error file stays complete, no temp file."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)])
    if r.returncode != 0:
        from tests.helpers import missing

        missing("cannot mount a tmpfs (needs root)")
    try:
        dead = f"git://127.0.0.1:{free_port()}/nothing.git"
        root = tmp_path / "root"
        with gitsync(
            tmp_path, *flags(repo=dead, root=root, period="50ms", error_file=mnt / "error.json")
        ) as p:
            wait_until((mnt / "error.json").exists, 10)
            before = json.loads((mnt / "error.json").read_text())
            # Fill the disk to the last byte.
            fd = os.open(mnt / "fill", os.O_WRONLY | os.O_CREAT)
            try:
                for size in (4096, 1):
                    try:
                        while True:
                            os.write(fd, b"x" * size)
                    except OSError:
                        pass
            finally:
                os.close(fd)
            n = metric(p, "podkit_gitsync_syncs_total", result="error")
            wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="error") > n + 3, 10)
            after = json.loads((mnt / "error.json").read_text())  # whole, parseable
            assert after["error"] == before["error"]
            assert sorted(os.listdir(mnt)) == ["error.json", "fill"]
            assert "cannot write --error-file" in p.stderr()
            # Space again: the file is rewritten.
            (mnt / "fill").unlink()
            wait_until(
                lambda: (
                    json.loads((mnt / "error.json").read_text())["failCount"] > after["failCount"]
                ),
                10,
            )
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_repeated_ssh_key_files_are_all_offered(
    tmp_path: Path, git_repos: GitRepos, sshd: Sshd
) -> None:
    up = git_repos.create("app", {"v": "ssh"})
    wrong = sshd.key.parent / "other"  # a key sshd does not accept, offered first
    p = run_program(
        "gitsync",
        [
            "--repo",
            sshd.url(up.bare),
            "--ssh",
            "--ssh-key-file",
            str(sshd.key),
            "--ssh-key-file",
            str(wrong),
            "--ssh-known-hosts-file",
            str(sshd.known_hosts),
            "--root",
            str(tmp_path / "r"),
            "--one-time",
            "--admin-addr",
            "off",
        ],
    )
    assert p.returncode == 0, p.stderr.decode()
    assert (tmp_path / "r" / "app" / "v").read_text() == "ssh"
    assert b"--ssh is deprecated" in p.stderr


def test_init_period_and_init_max_failures(tmp_path: Path) -> None:
    dead = f"git://127.0.0.1:{free_port()}/nothing.git"
    # Fast retries until the first success, and their own failure budget.
    p = run_program(
        "gitsync",
        flags(
            repo=dead,
            root=tmp_path / "a",
            period="1h",
            init_period="20ms",
            init_max_failures="3",
            admin_addr="off",
        ),
        timeout=60,
    )
    assert p.returncode == 1
    recs = [json.loads(x) for x in p.stderr.decode().splitlines() if x.startswith("{")]
    done = next(r for r in recs if r["message"] == "too many consecutive failures; exiting")
    assert done["failures"] == 3 and done["max_failures"] == 3


def test_left_out_flags_are_one_line_usage_errors(tmp_path: Path) -> None:
    for args, env in (
        ([], {"GITSYNC_GITHUB_APP_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----"}),
        (["--man"], {}),
        (["--git", "/usr/local/bin/git"], {}),
        (["--change-permissions", "0775"], {}),
    ):
        p = run_program(
            "gitsync",
            ["--repo", "https://h/x", "--root", str(tmp_path), *args, "--admin-addr", "off"],
            env=env,
        )
        assert p.returncode == 2, (args, env)
        lines = p.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "not supported" in lines[0], lines


def test_askpass_url(tmp_path: Path, git_repos: GitRepos, git_http: GitHttp) -> None:
    """git-sync's --askpass-url: asked before each sync, its answer used once."""
    up = git_repos.create("app", {"v": "1"})
    assert git_http.password
    answer = {"body": b"username=alice\npassword=wrong-one\n", "asked": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            answer["asked"] += 1
            body = answer["body"]
            assert isinstance(body, bytes)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = tmp_path / "root"
        url = f"http://127.0.0.1:{server.server_address[1]}/creds"
        with gitsync(
            tmp_path,
            *flags(repo=git_http.url("app"), root=root, period="100ms"),
            env={"GITSYNC_ASKPASS_URL": url},
        ) as p:
            wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="error") >= 2, 15)
            answer["body"] = f"username=alice\npassword={git_http.password}\n".encode()
            wait_published(root / "app", up.head(), 15)
            assert int(answer["asked"]) >= 3  # before every sync
            logs = p.stderr()
        assert git_http.password not in logs and "wrong-one" not in logs
    finally:
        server.shutdown()


def test_filter_partial_clone_with_sparse_checkout_across_updates(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"docs/a.md": "a1\n", "big/blob.bin": "x" * 5000})
    subprocess.run(["git", "config", "uploadpack.allowFilter", "true"], cwd=up.bare, check=True)
    sparse = tmp_path / "sparse"
    sparse.write_text("/docs/\n")
    root = tmp_path / "root"
    with gitsync(
        tmp_path,
        *flags(
            repo=git_daemon.url("app"),
            root=root,
            period="100ms",
            filter="blob:none",
            sparse_checkout_file=sparse,
        ),
    ) as p:
        p.wait_ready()
        wait_published(root / "app", up.head())
        sha2 = up.commit_push({"docs/a.md": "a2\n", "big/blob.bin": "y" * 5000})
        wait_published(root / "app", sha2, 15)
        assert (root / "app" / "docs" / "a.md").read_text() == "a2\n"
        assert not (root / "app" / "big").exists()
        # The big blob of either commit never came: only the checked-out ones did.
        missing = subprocess.run(
            ["git", "rev-list", "--objects", "--missing=print", sha2],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        blob = subprocess.run(
            ["git", "rev-parse", f"{sha2}:big/blob.bin"],
            cwd=up.bare,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert f"?{blob}" in missing
        assert metric(p, "podkit_gitsync_syncs_total", result="error") == 0


def test_credential_per_url_for_a_submodule_with_its_own_password(
    tmp_path: Path, git_repos: GitRepos, git_http: GitHttp
) -> None:
    """git-sync's submodule_sync_over_http_different_passwords: two servers, two users."""
    other = GitHttp(git_repos.base, free_port(), "bob", "0ther-Passw0rd-b0b").start()
    try:
        lib = git_repos.create("lib", {"lib.txt": "library\n"})
        app = git_repos.create("app", {"top": "t"})
        git_cmd = ["git", "-c", "protocol.file.allow=always"]
        subprocess.run(
            [*git_cmd, "submodule", "add", "-q", str(lib.bare), "vendor/lib"],
            cwd=app.work,
            check=True,
        )
        subprocess.run(
            ["git", "config", "-f", ".gitmodules", "submodule.vendor/lib.url", other.url("lib")],
            cwd=app.work,
            check=True,
        )
        head = app.commit_push({})
        pw_a, pw_b = tmp_path / "pw-a", tmp_path / "pw-b"
        assert git_http.password and other.password
        pw_a.write_text(git_http.password + "\n")
        pw_b.write_text(other.password + "\n")
        root = tmp_path / "root"
        cred = json.dumps({"url": other.url("lib"), "username": "bob", "password-file": str(pw_b)})
        p = run_program(
            "gitsync",
            flags(
                repo=git_http.url("app"),
                root=root,
                username="alice",
                password_file=pw_a,
                one_time=True,
                admin_addr="off",
            ),
            env={"GITSYNC_CREDENTIAL": f"[{cred}]"},
        )
        assert p.returncode == 0, p.stderr.decode()
        assert published(root / "app") == head
        assert (root / "app" / "vendor" / "lib" / "lib.txt").read_text() == "library\n"
        assert other.password.encode() not in p.stderr
    finally:
        other.stop()


def test_github_app_auth_mints_and_refreshes_an_installation_token(
    tmp_path: Path, git_repos: GitRepos
) -> None:
    """A local fake of GitHub's installation-token endpoint that checks the JWT
    with the app's public key (openssl, independent of gitsync's signer)."""
    from tests.helpers import need

    openssl = need("openssl")
    key, pub = tmp_path / "app.pem", tmp_path / "pub.pem"
    subprocess.run([openssl, "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    subprocess.run(
        [openssl, "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
        check=True,
        capture_output=True,
    )
    token = "ghs_installationTOKEN1234567890"
    minted: list[dict[str, object]] = []
    lifetime = {"seconds": 301}  # within the 5-minute refresh margin in a second

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_POST(self) -> None:
            import base64

            auth = self.headers.get("Authorization", "")
            ok = self.path == "/app/installations/42/access_tokens" and auth.startswith("Bearer ")
            if ok:
                head, payload, sig = auth[7:].split(".")
                d = tmp_path / f"jwt{len(minted)}"
                d.mkdir()
                (d / "in").write_text(f"{head}.{payload}")
                (d / "sig").write_bytes(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
                r = subprocess.run(
                    [openssl, "dgst", "-sha256", "-verify", str(pub), "-signature",
                     str(d / "sig"), str(d / "in")],
                    capture_output=True,
                )  # fmt: skip
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                ok = r.returncode == 0 and claims["iss"] == "12345" and claims["exp"] > time.time()
                minted.append(claims)
            if not ok:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            expires = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + lifetime["seconds"])
            )
            body = json.dumps({"token": token, "expires_at": expires}).encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    api = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    srv = GitHttp(git_repos.base, free_port(), "x-access-token", token).start()
    try:
        up = git_repos.create("app", {"v": "1"})
        root = tmp_path / "root"
        env = {
            "GITSYNC_GITHUB_APP_APPLICATION_ID": "12345",
            "GITSYNC_GITHUB_APP_INSTALLATION_ID": "42",
            "GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE": str(key),
            "GITSYNC_GITHUB_BASE_URL": f"http://127.0.0.1:{api.server_address[1]}/",
        }
        with gitsync(tmp_path, "--repo", srv.url("app"), "--root", str(root),
                     "--period", "100ms", env=env) as p:  # fmt: skip
            p.wait_ready()
            wait_published(root / "app", up.head())
            # About to expire: refreshed before a later sync.
            wait_until(lambda: len(minted) >= 3, 15, what="token refreshed")
            # Valid for an hour: kept across syncs.
            lifetime["seconds"] = 3600
            wait_until(lambda: len(minted) >= 4, 15)
            count = len(minted)
            n = metric(p, "podkit_gitsync_syncs_total", result="noop")
            wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="noop") > n + 3, 10)
            assert len(minted) in (count, count + 1)  # at most the one racing the change
            assert metric(p, "podkit_gitsync_syncs_total", result="error") == 0
            logs = p.stderr()
        assert token not in logs
    finally:
        srv.stop()
        api.shutdown()


def test_pre_publish_exechook_keeps_the_old_tree_when_it_fails(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"v": "good-1"})
    root = tmp_path / "root"
    seen = tmp_path / "seen"
    hook = f"sh -c 'echo $GITSYNC_HASH >> {seen}; ! grep -q bad v'"
    with gitsync(
        tmp_path,
        *flags(
            repo=git_daemon.url("app"), root=root, period="100ms", pre_publish_exechook_command=hook
        ),
    ) as p:
        p.wait_ready()
        good = up.head()
        wait_published(root / "app", good)
        bad = up.commit_push({"v": "bad"})
        wait_until(lambda: bad in seen.read_text(), 10, what="hook ran on the bad commit")
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="error") >= 2, 10)
        assert published(root / "app") == good and (root / "app" / "v").read_text() == "good-1"
        assert "pre-publish exechook: exit 1" in (p.get("/")[2]).decode()
        fixed = up.commit_push({"v": "good-2"})
        wait_published(root / "app", fixed, 10)
        assert metric(p, "podkit_gitsync_hook_runs_total", hook="pre_publish_exechook",
                      result="error") >= 2  # fmt: skip
        assert good in seen.read_text().split()


def test_sigterm_during_the_pre_publish_hook_kills_it_and_publishes_nothing(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"v": "1"})
    root = tmp_path / "root"
    started = tmp_path / "started"
    hook = f"sh -c 'echo $$ > {started}; exec sleep 60'"
    args = flags(repo=git_daemon.url("app"), root=root, pre_publish_exechook_command=hook)
    with gitsync(tmp_path, *args) as p:
        wait_until(lambda: started.exists() and started.read_text().strip(), 15, what="hook")
        pid = int(started.read_text())
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0
        assert time.monotonic() - t0 < 10  # the hook was killed, not waited for

    def alive() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
        except OSError:
            return False

    wait_until(lambda: not alive(), 5, what="hook process gone")
    assert published(root / "app") is None and up.head()
