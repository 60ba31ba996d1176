"""postgres:// and postgresql://: the PostgreSQL wire protocol (v3), no driver.

Ready when the server authenticates the user (trust, cleartext, MD5 or
SCRAM-SHA-256) and then says ReadyForQuery for the database: a server still
starting up (57P03), a missing database (3D000) or role, and a wrong password
(28P01) are each reported as such. `?sslmode=` follows libpq: disable, prefer
(the default: TLS when the server offers it), require (TLS, unverified),
verify-ca and verify-full (TLS checked against --ca-file or the system CAs).

`?query=SQL` waits for data, not just a login: the query runs (simple query
protocol) and the target is ready only when it returns at least one row, e.g.
`?query=SELECT 1 FROM schema_migrations WHERE version='42'`. A missing table
(42P01) is "not yet", like no row; any other error is reported as such.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
from urllib.parse import SplitResult

from .base import NotReady, Probe, Settings, register
from .net import MAX_MESSAGE, blocking, close, open_stream

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
SSLMODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
#: PostgreSQL's default is 4096. The server chooses the count, so a hostile one
#: could ask for 2**31 iterations: minutes of CPU per attempt.
MAX_SCRAM_ITERATIONS = 1_000_000

# SQLSTATEs worth a plain-words explanation next to the server's message.
SQLSTATES = {
    "57P03": "the server is starting up or shutting down",
    "28P01": "wrong password",
    "28000": "invalid authorization",
    "3D000": "no such database",
    "53300": "too many connections",
    "08P01": "protocol violation",
    "42P01": "no such table (yet)",
    "42703": "no such column",
    "42601": "syntax error",
}


@register
class PostgresProbe(Probe):
    schemes = ("postgres", "postgresql")
    default_ports = {"postgres": 5432, "postgresql": 5432}
    allows_path = True
    query_keys = frozenset({"sslmode", "password_file", "application_name", "query"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        if not self.user:
            raise ValueError("missing user (postgres://USER[:PASSWORD]@host:port/db)")
        self.database = self.path.lstrip("/") or self.user
        self.sslmode = self.query.get("sslmode", "prefer")
        if self.sslmode not in SSLMODES:
            raise ValueError(f"sslmode must be one of {', '.join(SSLMODES)}")
        self.app_name = self.query.get("application_name", "podkit-waitfor")
        self.sql = self.query.get("query")
        if self.sql is not None and (not self.sql.strip() or "\0" in self.sql):
            raise ValueError("query= needs an SQL statement")

    async def check(self) -> None:
        reader, writer = await open_stream(self.host, self.port)
        try:
            if self.sslmode != "disable":
                reader, writer = await self._negotiate_tls(reader, writer)
            await self._startup(reader, writer)
        finally:
            await close(writer)

    async def _negotiate_tls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        writer.write(struct.pack("!ii", 8, SSL_REQUEST))
        await writer.drain()
        answer = await reader.readexactly(1)
        if answer == b"N":
            if self.sslmode == "prefer":
                return reader, writer
            raise NotReady(f"the server does not offer TLS (sslmode={self.sslmode})")
        if answer != b"S":
            raise NotReady(f"not a PostgreSQL server (answered {answer!r} to SSLRequest)")
        verify = self.sslmode.startswith("verify")
        ctx = self.settings.ssl_context(verify, check_hostname=self.sslmode != "verify-ca")
        await writer.start_tls(ctx, server_hostname=self.host)
        return reader, writer

    async def _startup(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        params = {
            "user": self.user or "",
            "database": self.database,
            "application_name": self.app_name,
        }
        body = struct.pack("!i", PROTOCOL_3)
        body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
        body += b"\0"
        writer.write(struct.pack("!i", len(body) + 4) + body)
        await writer.drain()
        scram: _Scram | None = None
        authenticated = False
        while True:
            kind, data = await _read_message(reader)
            if kind == b"E":
                raise NotReady(_error_text(data))
            if kind == b"Z":
                if not authenticated:
                    raise NotReady("ReadyForQuery before authentication")
                if self.sql is not None:
                    await self._query(reader, writer, self.sql)
                writer.write(b"X\0\0\0\4")  # Terminate, so the server logs no EOF
                return
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            if len(data) < 4:
                raise NotReady("malformed authentication message")
            (code,) = struct.unpack("!i", data[:4])
            if code == 0:
                authenticated = True
            elif code == 3:
                _send(writer, b"p", self._need_password().encode() + b"\0")
            elif code == 5:
                pw, user = self._need_password(), self.user or ""
                inner = hashlib.md5((pw + user).encode()).hexdigest()
                digest = hashlib.md5(inner.encode() + data[4:8]).hexdigest()
                _send(writer, b"p", b"md5" + digest.encode() + b"\0")
            elif code == 10:
                mechanisms = data[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechanisms:
                    offered = b", ".join(m for m in mechanisms if m).decode(errors="replace")
                    raise NotReady(f"no supported SASL mechanism (server offers {offered})")
                scram = _Scram(self._need_password())
                first = scram.client_first()
                _send(writer, b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
            elif code == 11 and scram is not None:
                _send(writer, b"p", await scram.client_final(data[4:]))
            elif code == 12 and scram is not None:
                scram.verify_server(data[4:])
            else:
                raise NotReady(f"unsupported authentication method (code {code})")
            await writer.drain()

    async def _query(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sql: str
    ) -> None:
        """Run `sql`; return if it gave a row, raise NotReady otherwise."""
        _send(writer, b"Q", sql.encode() + b"\0")
        await writer.drain()
        rows = 0
        error: str | None = None
        while True:
            kind, data = await _read_message(reader)
            if kind == b"D":
                rows += 1
            elif kind == b"E":
                error = _error_text(data)  # ReadyForQuery still follows
            elif kind == b"Z":
                break
        if error is not None:
            raise NotReady(f"query failed: {error}")
        if not rows:
            raise NotReady("query returned no row")

    def _need_password(self) -> str:
        password = self.password
        if password is None:
            raise NotReady(f"the server wants a password for user {self.user!r}; none given")
        return password


def _send(writer: asyncio.StreamWriter, kind: bytes, payload: bytes) -> None:
    writer.write(kind + struct.pack("!i", len(payload) + 4) + payload)


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    kind = head[:1]
    (length,) = struct.unpack("!i", head[1:])
    if not kind.isalpha() or not 4 <= length <= MAX_MESSAGE:
        raise NotReady(f"not a PostgreSQL server (answered {head!r})")
    return kind, await reader.readexactly(length - 4)


def _error_text(data: bytes) -> str:
    fields: dict[str, str] = {}
    for item in data.split(b"\0"):
        if item:
            fields[chr(item[0])] = item[1:].decode("utf-8", "replace")
    code = fields.get("C", "")
    message = fields.get("M", "unknown error")
    plain = SQLSTATES.get(code)
    if code == "28000":  # one SQLSTATE for two different fixes
        if "pg_hba.conf" in message:
            plain = "not allowed in by pg_hba.conf"
        elif message.startswith("role ") and "does not exist" in message:
            plain = "no such role"
    return f"{plain}: {message} ({code})" if plain else f"{message} ({code})"


class _Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it."""

    def __init__(self, password: str) -> None:
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        # PostgreSQL takes the user from the startup message, so n= stays empty.
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = b""

    def client_first(self) -> bytes:
        return f"n,,{self.first_bare}".encode()

    async def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self.nonce) or not salt or not iterations.isdigit():
            raise NotReady("malformed SCRAM challenge from the server")
        if not 1 <= int(iterations) <= MAX_SCRAM_ITERATIONS:
            raise NotReady(
                f"SCRAM iteration count {iterations} from the server is not in "
                f"1-{MAX_SCRAM_ITERATIONS}; refusing to compute it"
            )
        # Off the event loop: thousands of iterations take milliseconds each
        # attempt, and a blocked loop would hold up the other targets and SIGTERM.
        salted = await blocking(
            hashlib.pbkdf2_hmac, "sha256", self.password, base64.b64decode(salt), int(iterations)
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server(self, server_final: bytes) -> None:
        text = server_final.decode(errors="replace")
        if not text.startswith("v=") or not hmac.compare_digest(
            base64.b64decode(text[2:]), self.server_signature
        ):
            raise NotReady("the server's SCRAM signature is wrong (not the server we think)")
