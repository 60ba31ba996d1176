"""dnsmasq (Debian dnsmasq-base) on 127.0.0.1:<port>, authoritative for `.test`.

The A/AAAA records come from a hosts file the test rewrites; `set_hosts` rewrites it
and sends SIGHUP, which makes dnsmasq read it again (as a headless Service's
endpoints change). SRV records are fixed at start (`--srv-host`), as is
anything else given as `extra` dnsmasq options (`--cname=`, `--txt-record=`).
It is a context manager: `with Dnsmasq(tmp, hosts) as dns:` stops it after.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import free_dns_port, need, wait_until


class Dnsmasq:
    def __init__(
        self,
        tmp: Path,
        hosts: dict[str, list[str]] | None = None,
        srv: Sequence[str] = (),
        ttl: int = 0,
        extra: Sequence[str] = (),
    ) -> None:
        self.binary = need("dnsmasq")
        self.port = free_dns_port()
        self.hosts_file = tmp / "dns-hosts"
        self.log = tmp / "dnsmasq.log"
        self._write(hosts or {})
        args = [
            self.binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={self.hosts_file}",
            f"--local-ttl={ttl}",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--user=root",  # it re-reads the hosts file from the test's private tmp dir
            "--pid-file=",
            "--local=/test/",  # authoritative: no forwarding, NXDOMAIN/NODATA answered here
            f"--log-facility={self.log}",
            *(f"--srv-host={s}" for s in srv),
            *extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.generation = 0
        wait_until(self._answers, 10, what="dnsmasq to answer")

    def _answers(self) -> bool:
        # dnsmasq exiting (a bad option, the port taken) is said at once, with its words
        if self.proc.poll() is not None:
            why = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"dnsmasq exited {self.proc.returncode}: {why}")
        return self.ask("ready.test") is not None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write(self, hosts: dict[str, list[str]]) -> None:
        lines = [f"{ip} {name}" for name, ips in hosts.items() for ip in ips]
        tmp = self.hosts_file.with_suffix(".new")
        tmp.write_text("\n".join([*lines, "127.0.0.1 ready.test", ""]))
        tmp.replace(self.hosts_file)

    def ask(self, name: str) -> list[str] | None:
        """A records of `name` as dnsmasq answers now (None: no answer yet)."""
        q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
        q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\0\1\0\1"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            try:
                s.sendto(q, ("127.0.0.1", self.port))
                data = s.recv(4096)
            except OSError:
                return None
        n = struct.unpack("!H", data[6:8])[0]
        # the answers follow the question; each A record ends with its 4 address bytes
        out, pos = [], len(q)
        for _ in range(n):
            pos += 2  # compressed name
            rtype, _, _, rdlen = struct.unpack("!HHIH", data[pos : pos + 10])
            pos += 10
            if rtype == 1:
                out.append(socket.inet_ntoa(data[pos : pos + 4]))
            pos += rdlen
        return sorted(out)

    def set_hosts(self, hosts: dict[str, list[str]]) -> None:
        """Rewrite the hosts file, SIGHUP, and wait until each name's A records are the new ones."""
        self._write(hosts)
        self.proc.send_signal(signal.SIGHUP)
        for name, ips in hosts.items():
            v4 = sorted(ip for ip in ips if ":" not in ip)  # ask() reads A records only

            def new(n: str = name, want: list[str] = v4) -> bool:
                return self.ask(n) == want

            wait_until(new, 5, what=f"dnsmasq {name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> Dnsmasq:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
