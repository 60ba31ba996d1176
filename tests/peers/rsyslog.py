"""A real rsyslogd (Debian's) writing both syslog file formats, unprivileged, on loopback.

It listens with imudp on a free 127.0.0.1 port (no /dev/log, no imuxsock, no
imklog), keeps its pid file and work directory in the test's temp dir, and
writes every message it receives four times: RSYSLOG_SyslogProtocol23Format
(RFC 5424), RSYSLOG_TraditionalFileFormat (RFC 3164 without PRI),
RSYSLOG_FileFormat (RFC 3339 timestamp, no PRI) and RSYSLOG_ForwardFormat's
layout (`<PRI>` + RFC 3339 timestamp + tag) with the newline a file needs
(the built-in ForwardFormat is meant for the wire and ends without one).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port, need, wait_until

FORMATS = {
    "rfc5424": "RSYSLOG_SyslogProtocol23Format",
    "traditional": "RSYSLOG_TraditionalFileFormat",
    "file": "RSYSLOG_FileFormat",
    "forward": "ForwardFormatLF",
}
_FORWARD_LF = (
    'template(name="ForwardFormatLF" type="string" '
    'string="<%PRI%>%TIMESTAMP:::date-rfc3339% %HOSTNAME% %syslogtag:1:32%'
    '%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")'
)


@dataclass
class Rsyslog:
    port: int
    root: Path
    files: dict[str, Path]
    proc: subprocess.Popen[bytes]

    def send(self, message: bytes | str) -> None:
        """One UDP datagram to rsyslog's imudp input."""
        data = message.encode() if isinstance(message, str) else message
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, ("127.0.0.1", self.port))

    def lines(self, fmt: str) -> list[str]:
        try:
            return self.files[fmt].read_bytes().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return []

    def wait_lines(self, n: int, timeout: float = 15.0) -> None:
        wait_until(
            lambda: all(len(self.lines(f)) >= n for f in self.files),
            timeout,
            0.05,
            what=f"{n} lines in every rsyslog output file",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_rsyslog(tmp: Path, extra_config: str = "") -> Rsyslog:
    binary = need("rsyslogd")
    root = tmp / "rsyslog"
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    port = free_port("127.0.0.1", socket.SOCK_DGRAM)
    files = {name: root / f"{name}.log" for name in FORMATS}
    actions = "\n".join(
        f'  action(type="omfile" file="{files[name]}" template="{tpl}")'
        for name, tpl in FORMATS.items()
    )
    conf = root / "rsyslog.conf"
    conf.write_text(
        f"""
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{port}" ruleset="test")
{_FORWARD_LF}
ruleset(name="test") {{
{actions}
}}
{extra_config}
"""
    )
    proc = subprocess.Popen(
        [binary, "-n", "-f", str(conf), "-i", str(root / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "RSYSLOG_DEBUG": ""},
    )
    # imudp has no connect to probe: send numbered markers until one comes out
    # of every file. rsyslog keeps one input's order, so once marker N is
    # written every earlier one is too, and truncating leaves no stray probe.
    sent = [0]

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited: {proc.stderr.read() if proc.stderr else ''!r}")
        marker = f"rsyslog-ready-{sent[0]}".encode()
        for f in files.values():
            if not (f.exists() and marker in f.read_bytes()):
                break
        else:
            return True
        sent[0] += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(
                f"<13>Jan  1 00:00:00 probe probe: rsyslog-ready-{sent[0]}".encode(),
                ("127.0.0.1", port),
            )
        return False

    try:
        wait_until(up, 15.0, 0.2, what="rsyslogd to write its output files")
    except AssertionError:
        proc.kill()
        proc.wait()
        raise
    # Start every test from empty files: the probes are not test data.
    srv = Rsyslog(port, root, files, proc)
    for f in files.values():
        f.write_bytes(b"")
    return srv


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    srv = start_rsyslog(tmp_path)
    yield srv
    srv.stop()
