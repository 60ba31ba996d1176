"""redis:// and rediss://: speaks RESP; ready when PING answers PONG.

`redis://[user:password@]host:port[/db]`. With credentials it sends AUTH
first (a wrong password is reported as such), with a database number SELECT;
a server still loading its dataset answers `-LOADING` and is not ready.

`?key=NAME` waits for data: ready only once the key exists (EXISTS), and with
`&value=V` once its value (GET) is exactly V, e.g. a flag a seeding job sets
last.
"""

from __future__ import annotations

import asyncio
from urllib.parse import SplitResult

from .base import NotReady, Probe, Settings, register
from .net import MAX_MESSAGE, close, open_stream


@register
class RedisProbe(Probe):
    schemes = ("redis", "rediss")
    default_ports = {"redis": 6379, "rediss": 6379}
    allows_path = True
    query_keys = frozenset({"password_file", "key", "value"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        db = self.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"database must be a number, not {db!r}")
        self.db = int(db) if db else 0
        self.key = self.query.get("key")
        self.value = self.query.get("value")
        if self.key == "":
            raise ValueError("key= needs a key name")
        if self.value is not None and self.key is None:
            raise ValueError("value= needs key=NAME")

    async def check(self) -> None:
        password = self.password
        tls = self.settings.ssl_context() if self.scheme == "rediss" else None
        reader, writer = await open_stream(self.host, self.port, tls=tls)
        try:
            if password is not None:
                # `redis://:pw@` is the classic requirepass; a user name means a Redis 6 ACL user.
                args = ["AUTH", self.user, password] if self.user else ["AUTH", password]
                reply = await _call(reader, writer, *args)
                if reply.startswith("-"):
                    raise NotReady(_auth_error(reply))
            if self.db:
                reply = await _call(reader, writer, "SELECT", str(self.db))
                if reply.startswith("-"):
                    raise NotReady(f"SELECT {self.db}: {_error(reply)}")
            reply = await _call(reader, writer, "PING")
            if reply != "+PONG":
                if reply.startswith("-LOADING"):
                    raise NotReady("loading the dataset in memory (-LOADING)")
                if reply.startswith(("-NOAUTH", "-ERR operation not permitted")):
                    raise NotReady("authentication required: give the password in the URL")
                raise NotReady(f"PING answered {_error(reply)}")
            if self.key is not None:
                await self._check_key(reader, writer, self.key)
        finally:
            await close(writer)

    async def _check_key(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str
    ) -> None:
        if self.value is None:
            reply = await _call(reader, writer, "EXISTS", key)
            if reply.startswith("-"):
                raise NotReady(f"EXISTS {key}: {_error(reply)}")
            if reply != ":1":
                raise NotReady(f"key {key!r} does not exist (yet)")
            return
        reply = await _call(reader, writer, "GET", key)
        if reply.startswith("-"):
            raise NotReady(f"GET {key}: {_error(reply)}")  # e.g. WRONGTYPE: not a string
        if reply == "$-1":
            raise NotReady(f"key {key!r} does not exist (yet)")
        if not reply.startswith("$") or not reply[1:].isdigit():
            raise NotReady(f"GET {key}: unexpected reply {reply[:40]!r}")
        size = int(reply[1:])
        want = self.value.encode()
        if size > MAX_MESSAGE:
            raise NotReady(f"key {key!r} holds {size} bytes, not the expected value")
        data = (await reader.readexactly(size + 2))[:-2]
        if data != want:
            shown = data[:40].decode("utf-8", "replace")
            raise NotReady(f"key {key!r} is {shown!r}, waiting for {self.value!r}")


async def _call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *args: str) -> str:
    """Send one command as a RESP array; the reply line (simple string or error)."""
    out = bytearray(b"*%d\r\n" % len(args))
    for arg in args:
        data = arg.encode()
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    writer.write(bytes(out))
    await writer.drain()
    line = (await reader.readuntil(b"\r\n"))[:-2].decode("utf-8", "replace")
    if not line or line[0] not in "+-:$*":
        raise NotReady(f"not a Redis server (answered {line[:40]!r})")
    return line


def _error(reply: str) -> str:
    return reply[1:] if reply.startswith("-") else repr(reply[:60])


def _auth_error(reply: str) -> str:
    text = _error(reply)
    if "WRONGPASS" in text or "invalid password" in text or "invalid username" in text:
        return f"wrong password or user name ({text})"
    if "without any password configured" in text or "no password is set" in text:
        return f"the server has no password set ({text})"
    return f"AUTH failed: {text}"
