"""mysql:// and mariadb://: the MySQL client/server protocol, no driver.

`mysql://host:port` is ready when the server sends its initial handshake
(protocol 10) rather than an error packet (too many connections, host
blocked, still starting). With a user (`mysql://user[:password]@host:port[/db]`,
or `?password_file=`) it logs in for real:

- `mysql_native_password` (MariaDB's and MySQL 5.7's default): the SHA-1
  challenge-response;
- `caching_sha2_password` (MySQL 8's default): the SHA-256 fast path when the
  server has the user cached; otherwise the full path, which sends the
  password over TLS, or without TLS encrypted with the server's RSA public key
  (RSA-OAEP, computed here with the standard library);
- an auth switch request from the server to either of them.

`?query=SQL` then runs the query (COM_QUERY) and is ready only when it
returns at least one row. `?ssl-mode=` follows MySQL's client: `disabled`,
`preferred` (the default: TLS when the server offers it), `required` (TLS,
unverified), `verify_ca` and `verify_identity` (checked against --ca-file or
the system CAs).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl
import struct
from urllib.parse import SplitResult

from .base import NotReady, Probe, Settings, register
from .net import MAX_MESSAGE, close, open_stream

CLIENT_LONG_PASSWORD = 0x1
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
MAX_PACKET = 16 * 1024 * 1024
UTF8MB4 = 45
SSL_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")
NATIVE = "mysql_native_password"
CACHING_SHA2 = "caching_sha2_password"

# Server error codes worth a plain-words explanation.
ERRORS = {
    1040: "too many connections",
    1045: "access denied (wrong user or password)",
    1049: "no such database",
    1044: "access denied to the database",
    1146: "no such table (yet)",
    1054: "no such column",
    1064: "syntax error",
    1129: "host blocked (too many connection errors)",
    1130: "host not allowed to connect",
}


@register
class MySQLProbe(Probe):
    schemes = ("mysql", "mariadb")
    default_ports = {"mysql": 3306, "mariadb": 3306}
    allows_path = True
    query_keys = frozenset({"password_file", "query", "ssl-mode"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        self.database = self.path.strip("/")
        self.sql = self.query.get("query")
        if self.sql is not None and not self.sql.strip():
            raise ValueError("query= needs an SQL statement")
        if self.sql is not None and not self.user:
            raise ValueError("query= needs a user (mysql://USER[:PASSWORD]@host:port/db)")
        self.ssl_mode = self.query.get("ssl-mode", "preferred").lower()
        if self.ssl_mode not in SSL_MODES:
            raise ValueError(f"ssl-mode must be one of {', '.join(SSL_MODES)}")

    async def check(self) -> None:
        reader, writer = await open_stream(self.host, self.port)
        conn = _Conn(reader, writer)
        try:
            payload = await conn.read()
            if payload[:1] == b"\xff":
                raise NotReady(_error_text(payload))
            if payload[:1] != b"\x0a":
                raise NotReady(f"unexpected handshake protocol {payload[0]} (want 10)")
            if not self.user:
                return  # no credentials: the greeting is the readiness
            hs = _Handshake.parse(payload)
            await self._login(conn, hs)
            if self.sql is not None:
                await self._query(conn, self.sql)
            conn.seq = 0
            conn.send(b"\x01")  # COM_QUIT
        finally:
            await close(conn.writer)

    # -- login -----------------------------------------------------------------

    async def _login(self, conn: _Conn, hs: _Handshake) -> None:
        caps = (
            CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
        )
        if self.database:
            caps |= CLIENT_CONNECT_WITH_DB
        tls = False
        if self.ssl_mode != "disabled" and hs.caps & CLIENT_SSL:
            caps |= CLIENT_SSL
            conn.send(struct.pack("<IIB23x", caps, MAX_PACKET, UTF8MB4))
            await conn.writer.drain()
            await conn.writer.start_tls(self._tls_context(), server_hostname=self.host)
            tls = True
        elif self.ssl_mode not in ("disabled", "preferred"):
            raise NotReady(f"the server does not offer TLS (ssl-mode={self.ssl_mode})")
        password = self._password_text()
        plugin = hs.plugin if hs.plugin in (NATIVE, CACHING_SHA2) else NATIVE
        scramble = hs.scramble
        body = struct.pack("<IIB23x", caps, MAX_PACKET, UTF8MB4)
        body += (self.user or "").encode() + b"\0"
        auth = _scramble(plugin, password, scramble)
        body += bytes([len(auth)]) + auth
        if self.database:
            body += self.database.encode() + b"\0"
        body += plugin.encode() + b"\0"
        conn.send(body)
        await conn.writer.drain()
        for _ in range(5):  # OK, or a short exchange of switch / more-data packets
            reply = await conn.read()
            kind = reply[:1]
            if kind == b"\x00":
                return
            if kind == b"\xff":
                raise NotReady(_error_text(reply))
            if kind == b"\xfe":  # AuthSwitchRequest: another plugin, a new scramble
                name, _, data = reply[1:].partition(b"\0")
                plugin = name.decode(errors="replace")
                if plugin not in (NATIVE, CACHING_SHA2):
                    raise NotReady(f"unsupported authentication plugin {plugin!r}")
                scramble = data.rstrip(b"\0")[:20]
                conn.send(_scramble(plugin, password, scramble))
            elif kind == b"\x01" and plugin == CACHING_SHA2:
                more = reply[1:]
                if more == b"\x03":  # fast auth: the server had the user cached
                    continue
                if more == b"\x04":  # full auth: the password itself, protected
                    if tls:
                        conn.send(password.encode() + b"\0")
                    else:
                        conn.send(b"\x02")  # ask for the server's RSA public key
                        await conn.writer.drain()
                        key = await conn.read()
                        if key[:1] != b"\x01":
                            raise NotReady("the server sent no RSA public key")
                        conn.send(_rsa_password(password, scramble, key[1:]))
                elif more.startswith(b"-----BEGIN"):
                    conn.send(_rsa_password(password, scramble, more))
                else:
                    raise NotReady(f"unexpected caching_sha2_password step {more[:8]!r}")
            else:
                raise NotReady(f"unexpected packet during login ({reply[:1]!r})")
            await conn.writer.drain()
        raise NotReady("login did not finish")

    def _password_text(self) -> str:
        password = self.password
        return "" if password is None else password

    def _tls_context(self) -> ssl.SSLContext:
        verify = self.ssl_mode.startswith("verify")
        return self.settings.ssl_context(verify, check_hostname=self.ssl_mode != "verify_ca")

    # -- query -----------------------------------------------------------------

    async def _query(self, conn: _Conn, sql: str) -> None:
        conn.seq = 0
        conn.send(b"\x03" + sql.encode())
        await conn.writer.drain()
        first = await conn.read()
        if first[:1] == b"\xff":
            raise NotReady(f"query failed: {_error_text(first)}")
        if first[:1] == b"\x00":
            raise NotReady("query returned no row (not a SELECT?)")
        if first[:1] == b"\xfb":
            raise NotReady("the server asked for a local file; refused")
        columns = _lenenc(first)
        for _ in range(columns):
            await conn.read()
        if not _is_eof(await conn.read()):
            raise NotReady("malformed result set")
        rows = 0
        while True:
            row = await conn.read()
            if row[:1] == b"\xff":
                raise NotReady(f"query failed: {_error_text(row)}")
            if _is_eof(row):
                break
            rows += 1
        if not rows:
            raise NotReady("query returned no row")


class _Conn:
    """Packets: 3-byte length, sequence id, payload."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seq = 0

    async def read(self) -> bytes:
        head = await self.reader.readexactly(4)
        length = int.from_bytes(head[:3], "little")
        if not 1 <= length <= MAX_MESSAGE:
            raise NotReady(f"not a MySQL server (answered {head!r})")
        self.seq = (head[3] + 1) & 0xFF
        return await self.reader.readexactly(length)

    def send(self, payload: bytes) -> None:
        self.writer.write(len(payload).to_bytes(3, "little") + bytes([self.seq]) + payload)
        self.seq = (self.seq + 1) & 0xFF


class _Handshake:
    def __init__(self, caps: int, scramble: bytes, plugin: str) -> None:
        self.caps = caps
        self.scramble = scramble
        self.plugin = plugin

    @classmethod
    def parse(cls, p: bytes) -> _Handshake:
        try:
            end = p.index(b"\0", 1)  # the server version string
            pos = end + 1 + 4  # connection id
            part1 = p[pos : pos + 8]
            pos += 9  # and a filler byte
            caps = int.from_bytes(p[pos : pos + 2], "little")
            pos += 2
            plugin = ""
            part2 = b""
            if len(p) > pos:
                pos += 3  # charset, status flags
                caps |= int.from_bytes(p[pos : pos + 2], "little") << 16
                data_len = p[pos + 2]
                pos += 3 + 10  # upper caps, auth data length, reserved
                if caps & CLIENT_SECURE_CONNECTION:
                    n = max(13, data_len - 8)
                    part2 = p[pos : pos + n]
                    pos += n
                if caps & CLIENT_PLUGIN_AUTH:
                    plugin = p[pos:].split(b"\0", 1)[0].decode(errors="replace")
        except (ValueError, IndexError):
            raise NotReady("malformed handshake from the server") from None
        return cls(caps, (part1 + part2).rstrip(b"\0")[:20], plugin)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=False))


def _scramble(plugin: str, password: str, scramble: bytes) -> bytes:
    if not password:
        return b""
    pw = password.encode()
    if plugin == CACHING_SHA2:
        h1 = hashlib.sha256(pw).digest()
        h2 = hashlib.sha256(hashlib.sha256(h1).digest() + scramble).digest()
        return _xor(h1, h2)
    h1 = hashlib.sha1(pw).digest()
    h2 = hashlib.sha1(scramble + hashlib.sha1(h1).digest()).digest()
    return _xor(h1, h2)


def _rsa_password(password: str, scramble: bytes, pem: bytes) -> bytes:
    """caching_sha2_password without TLS: (password NUL) XOR scramble, RSA-OAEP(SHA-1)."""
    n, e = _rsa_public_key(pem)
    plain = password.encode() + b"\0"
    mask = (scramble * (len(plain) // max(1, len(scramble)) + 1))[: len(plain)]
    return _oaep_encrypt(_xor(plain, mask), n, e)


def _der(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, next position) of one DER element."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return tag, data[pos : pos + length], pos + length


def _rsa_public_key(pem: bytes) -> tuple[int, int]:
    """n and e from a PEM SubjectPublicKeyInfo or PKCS#1 RSAPublicKey."""
    try:
        lines = pem.decode("ascii").strip().splitlines()
        der = base64.b64decode("".join(line for line in lines if not line.startswith("-----")))
        _, seq, _ = _der(der, 0)
        tag, first, after = _der(seq, 0)
        if tag == 0x30:  # SubjectPublicKeyInfo: algorithm, then a BIT STRING with RSAPublicKey
            _, bits, _ = _der(seq, after)
            _, seq, _ = _der(bits[1:], 0)
            tag, first, after = _der(seq, 0)
        n = int.from_bytes(first, "big")
        _, e_bytes, _ = _der(seq, after)
        return n, int.from_bytes(e_bytes, "big")
    except (ValueError, IndexError, UnicodeDecodeError):
        raise NotReady("the server's RSA public key cannot be read") from None


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha1(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _oaep_encrypt(message: bytes, n: int, e: int) -> bytes:
    """RSAES-OAEP (RFC 8017 §7.1.1) with SHA-1 and MGF1-SHA-1, as OpenSSL's default OAEP."""
    k = (n.bit_length() + 7) // 8
    h_len = 20
    if len(message) > k - 2 * h_len - 2:
        raise NotReady("the password is too long for the server's RSA key")
    db = hashlib.sha1(b"").digest() + b"\0" * (k - len(message) - 2 * h_len - 2) + b"\x01" + message
    seed = os.urandom(h_len)
    masked_db = _xor(db, _mgf1(seed, k - h_len - 1))
    masked_seed = _xor(seed, _mgf1(masked_db, h_len))
    em = b"\0" + masked_seed + masked_db
    return pow(int.from_bytes(em, "big"), e, n).to_bytes(k, "big")


def _lenenc(p: bytes) -> int:
    first = p[0]
    if first < 0xFB:
        return first
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None:
        raise NotReady("malformed result set")
    return int.from_bytes(p[1 : 1 + size], "little")


def _is_eof(p: bytes) -> bool:
    return p[:1] == b"\xfe" and len(p) < 9


def _error_text(payload: bytes) -> str:
    (code,) = struct.unpack("<H", payload[1:3]) if len(payload) >= 3 else (0,)
    text = payload[3:]
    if text[:1] == b"#":  # '#' + 5-character SQLSTATE, when present
        text = text[6:]
    message = text.decode("utf-8", "replace")
    plain = ERRORS.get(code)
    if plain:
        return f"{plain}: {message} ({code})"
    return f"server error {code}: {message}"
