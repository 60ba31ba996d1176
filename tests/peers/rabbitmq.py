"""A real RabbitMQ (Debian's rabbitmq-server) on free loopback ports, in a temp directory.

The broker runs as its own Erlang node (a unique node name, distribution on a
free port, `HOME` in the temp dir for the cookie) from
/usr/lib/rabbitmq/bin/rabbitmq-server directly: the /usr/sbin wrapper would
switch to the system `rabbitmq` user and its /var/lib directory. It knows one
user, `app` with password `app-secret` (not loopback-only), on vhost `/`.
Start once per module with the `rabbitmq_server` fixture (the broker takes a
few seconds to boot).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port, need, wait_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
USER, PASSWORD = "app", "app-secret"


@dataclass
class RabbitMQServer:
    port: int
    base: Path
    proc: subprocess.Popen[bytes]

    def url(self, user: str = USER, password: str = PASSWORD, vhost: str = "") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/{vhost}"

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.base.glob("log/*.log"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The script execs the Erlang VM in its own process group: end the group.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # The broker started Erlang's port mapper as a daemon of its own; it
        # refuses to exit while another node is registered, so this is safe.
        epmd = shutil.which("epmd")
        if epmd:
            subprocess.run([epmd, "-kill"], capture_output=True, timeout=10, check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def start_rabbitmq() -> RabbitMQServer:
    if not os.path.exists(SERVER):
        need("rabbitmq-server")  # skips or fails with the package's name
    port, dist = free_port(), free_port()
    base = Path(tempfile.mkdtemp(prefix="podkit-rabbitmq-"))
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\n"
        f"default_user = {USER}\ndefault_pass = {PASSWORD}\nloopback_users = none\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    env = {
        **os.environ,
        "HOME": str(base),
        "RABBITMQ_NODENAME": f"podkit-{uuid.uuid4().hex[:8]}@localhost",
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
    }
    proc = subprocess.Popen(
        [SERVER],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    srv = RabbitMQServer(port, base, proc)
    try:
        wait_port(port, timeout=90)
    except AssertionError:
        logs = srv.logs()[-2000:]
        srv.stop()
        raise AssertionError(f"rabbitmq did not start:\n{logs}") from None
    return srv


@pytest.fixture(scope="module")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    srv = start_rabbitmq()
    yield srv
    srv.stop()
