"""Real git servers on free loopback ports, and upstream repositories to push to.

- `git daemon` (git://)
- `git http-backend` behind a small http.server CGI wrapper with basic auth
  (http://); it can be stopped and started again on the same port, and
  throttled to make a fetch slow enough to interrupt
- sshd (Debian's openssh-server) with a throwaway host key and user key, for
  ssh:// with known-hosts checking

Run `python -m tests.peers.git http ...` to start the HTTP wrapper by hand.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, need, wait_port

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path | str | None = None, check: bool = True) -> str:
    env = {**os.environ, **GIT_ENV}
    p = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {p.stderr}")
    return p.stdout.strip()


@dataclass
class Upstream:
    """A bare repository served by the peers, and a working clone that pushes to it."""

    bare: Path
    work: Path
    name: str
    commits: int = 0

    def commit(self, files: dict[str, str | None], message: str | None = None) -> str:
        """Write (or, with None, delete) files, commit, return the new sha (not pushed)."""
        for rel, text in files.items():
            p = self.work / rel
            if text is None:
                p.unlink(missing_ok=True)
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        git("add", "-A", cwd=self.work)
        self.commits += 1
        git("commit", "-q", "--allow-empty", "-m", message or f"c{self.commits}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self, force: bool = False, ref: str = "HEAD:refs/heads/main") -> None:
        git("push", "-q", *(["--force"] if force else []), "origin", ref, cwd=self.work)

    def commit_push(self, files: dict[str, str | None], message: str | None = None) -> str:
        sha = self.commit(files, message)
        self.push()
        return sha

    def tag(self, name: str, annotated: bool = False) -> str:
        if annotated:
            git("tag", "-a", "-m", name, name, cwd=self.work)
        else:
            git("tag", name, cwd=self.work)
        git("push", "-q", "origin", f"refs/tags/{name}", cwd=self.work)
        return git("rev-parse", f"{name}^{{commit}}", cwd=self.work)

    def reset_hard(self, rev: str) -> None:
        git("reset", "-q", "--hard", rev, cwd=self.work)

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work)

    def precreate(self, trees: list[dict[str, str]]) -> list[str]:
        """Write a chain of commits straight into the bare repo with one `git fast-import`.

        Returns their hashes; `set_main()` then moves the branch to one of them
        without running git at all, so a test can make 100 changes quickly.
        """
        parent = git("rev-parse", "refs/heads/main", cwd=self.bare)
        out = []
        for i, files in enumerate(trees, 1):
            msg = f"pre {i}".encode()
            out.append(b"commit refs/heads/pre\nmark :%d\n" % i)
            out.append(b"committer t <t@example.invalid> %d +0000\n" % (1700000000 + i))
            out.append(b"data %d\n%s\n" % (len(msg), msg))
            out.append(b"from %s\n" % (parent.encode() if i == 1 else b":%d" % (i - 1)))
            for name, text in files.items():
                data = text.encode()
                out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (name.encode(), len(data), data))
            out.append(b"\n")
        marks = self.bare / "pre.marks"
        subprocess.run(
            ["git", "fast-import", "--quiet", f"--export-marks={marks}"],
            input=b"".join(out),
            cwd=self.bare,
            env={**os.environ, **GIT_ENV},
            check=True,
        )
        by_mark = dict(line.split() for line in marks.read_text().splitlines())
        return [by_mark[f":{i}"] for i in range(1, len(trees) + 1)]

    def set_main(self, sha: str) -> None:
        """Point refs/heads/main at sha by writing the loose ref (atomic rename)."""
        ref = self.bare / "refs" / "heads" / "main"
        tmp = ref.with_name("main.tmp-test")
        tmp.write_text(sha + "\n")
        os.replace(tmp, ref)


@dataclass
class GitRepos:
    """Bare repositories under one base directory that every server exports."""

    base: Path
    made: dict[str, Upstream] = field(default_factory=dict)

    def create(self, name: str = "app", files: dict[str, str | None] | None = None) -> Upstream:
        need("git")
        bare = self.base / f"{name}.git"
        git("init", "-q", "--bare", "--initial-branch=main", str(bare))
        # Let clients fetch any reachable commit by hash (git-sync --ref <sha>).
        git("config", "uploadpack.allowReachableSHA1InWant", "true", cwd=bare)
        git("config", "http.receivepack", "true", cwd=bare)
        work = self.base.parent / "work" / name
        work.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "-q", str(bare), str(work))
        git("checkout", "-q", "-b", "main", cwd=work)
        up = Upstream(bare, work, name)
        up.commit_push(files or {"README": "hello\n"})
        self.made[name] = up
        return up


@pytest.fixture
def git_repos(tmp_path: Path) -> GitRepos:
    base = tmp_path / "srv"
    base.mkdir()
    return GitRepos(base)


# -- git daemon ---------------------------------------------------------------


@dataclass
class GitDaemon:
    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def start(self) -> GitDaemon:
        self.proc = subprocess.Popen(
            [
                need("git"),
                "daemon",
                "--reuseaddr",
                "--export-all",
                f"--base-path={self.base}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(10)


@pytest.fixture
def git_daemon(git_repos: GitRepos) -> Iterator[GitDaemon]:
    d = GitDaemon(git_repos.base, free_port()).start()
    yield d
    d.stop()


# -- git http-backend behind basic auth ---------------------------------------


@dataclass
class GitHttp:
    base: Path
    port: int
    user: str | None
    password: str | None
    throttle: int = 0
    proc: subprocess.Popen[bytes] | None = None
    #: (certificate, key) files: serve https instead of http.
    tls: tuple[Path, Path] | None = None

    def url(self, name: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{name}.git"

    def start(self) -> GitHttp:
        args = [
            sys.executable,
            "-m",
            "tests.peers.git",
            "http",
            "--root",
            str(self.base),
            "--port",
            str(self.port),
            "--throttle",
            str(self.throttle),
        ]
        if self.tls:
            args += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        env = dict(os.environ)
        if self.user:
            # Through the environment, not argv: the test greps `ps` for this password.
            env["GIT_HTTP_TEST_AUTH"] = f"{self.user}:{self.password}"
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def git_http(git_repos: GitRepos) -> Iterator[GitHttp]:
    srv = GitHttp(git_repos.base, free_port(), "alice", "s3cret-Pa55word").start()
    yield srv
    srv.stop()


def _serve_http(
    root: str, port: int, auth: str | None, throttle: int, tls: tuple[str, str] | None = None
) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    expected = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _handle(self) -> None:
            if expected and self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = self._body()
            path, _, query = self.path.partition("?")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": auth.split(":", 1)[0] if auth else "",
                "REMOTE_ADDR": "127.0.0.1",
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            p = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            head, sep, payload = p.stdout.partition(b"\r\n\r\n")
            if not sep:
                head, _, payload = p.stdout.partition(b"\n\n")
            status = 200
            headers = []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if throttle <= 0:
                self.wfile.write(payload)
                return
            chunk = max(1024, throttle // 20)
            for i in range(0, len(payload), chunk):
                self.wfile.write(payload[i : i + chunk])
                self.wfile.flush()
                time.sleep(chunk / throttle)

        do_GET = _handle
        do_POST = _handle

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if tls:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


# -- sshd ---------------------------------------------------------------------


@dataclass
class Sshd:
    port: int
    user: str
    key: Path
    known_hosts: Path
    wrong_known_hosts: Path
    proc: subprocess.Popen[bytes]

    def url(self, bare: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{bare}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    binary = need("sshd")
    keygen = need("ssh-keygen")
    need("ssh")
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host", "user", "other"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    port = free_port()
    host_pub = (d / "host.pub").read_text().split()
    other_pub = (d / "other.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "wrong_known_hosts").write_text(f"[127.0.0.1]:{port} {other_pub[0]} {other_pub[1]}\n")
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    (d / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel ERROR
"""
    )
    if os.getuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    proc = subprocess.Popen(
        [binary, "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=open(d / "sshd.log", "wb"),
    )
    wait_port(port)
    srv = Sshd(port, user, d / "user", d / "known_hosts", d / "wrong_known_hosts", proc)
    yield srv
    srv.stop()


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.peers.git")
    sub = parser.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("http", help="git http-backend behind basic auth")
    h.add_argument("--root", required=True)
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--throttle", type=int, default=0, help="bytes/s of response bodies")
    h.add_argument("--tls-cert", help="serve https with this certificate (and --tls-key)")
    h.add_argument("--tls-key")
    a = parser.parse_args()
    tls = (a.tls_cert, a.tls_key) if a.tls_cert else None
    _serve_http(a.root, a.port, os.environ.get("GIT_HTTP_TEST_AUTH") or None, a.throttle, tls)


def cert_for(ca_pem: Path, ca_key: Path, dirpath: Path, host: str) -> tuple[Path, Path]:
    """A server certificate from the test CA that names only `host`."""
    openssl = need("openssl")
    key, csr, pem, ext = (dirpath / f"{host}.{x}" for x in ("key", "csr", "pem", "ext"))
    ext.write_text(f"subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth\n")
    for args in (
        [
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            f"/CN={host}",
        ],
        [
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_pem),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(pem),
            "-days",
            "2",
            "-extfile",
            str(ext),
        ],
    ):
        subprocess.run([openssl, *args], check=True, capture_output=True)
    return pem, key


if __name__ == "__main__":
    _main()
