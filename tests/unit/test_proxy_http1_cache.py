"""The fast path's head cache, differentially against parsing the whole head.

`RequestCache.find` looks a head up without its X-Request-Id line (so heads that
differ only in their id share one parse) and hands the id back separately, and reads
a head whose header lines it has parsed before under another request line (another
path, method or version) from that parse. The property: for any head, with the cache
cold or already holding the head's other lines, or its header lines under another
request line, `find` accepts exactly what `parse_request` accepts for the fast path,
reads the same framing, and passes on the same header lines (the id's line moved
after the others, where the proxy adds its own). Hostile ids are in the mix: empty,
padded, control characters, DEL, obs-text, a bare CR, a second id line, other
spellings of the name.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from podkit.ambassadors.proxy.accesslog import json_str
from podkit.ambassadors.proxy.http1 import (
    ADMIT,
    ProtocolError,
    Request,
    RequestCache,
    RequestRules,
    parse_request,
)
from podkit.ambassadors.proxy.httpproxy import fast_request

from tests.unit.test_proxy_http1_diff import EXAMPLES, request_heads

RULES = RequestRules([b"authorization"], None, keep_host=False)
FIELDS = ("method", "target", "minor", "body_len", "chunked", "keep_alive", "host", "upgrade")
FIELDS += ("xff", "xfp", "hash_value")

ID_NAMES = st.sampled_from(
    [b"X-Request-Id", b"X-Request-Id", b"x-request-id", b"X-REQUEST-ID", b"X-Request-Id "]
)
ID_VALUES = st.one_of(
    st.sampled_from([b"bench-1", b" r-2 ", b"", b"\t", b"a b", b'q"uote', b"back\\slash"]),
    st.sampled_from([b"caf\xc3\xa9", b"a\x7fb", b"a\x01b", b"a\rb", b"a\nb", b"a\x00b"]),
    st.binary(max_size=12),
)


# well-formed heads, so that most of them reach the id lookup (request_heads() makes
# mostly refused ones, to compare refusals)
PLAIN_LINES = st.sampled_from(
    [
        b"Accept: */*",
        b"X-Forwarded-For: 10.0.0.1",
        b"Connection: close",
        b"Connection: keep-alive, x-a",
        b"X-A: 1",
        b"Content-Length: 0",
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
        b"Upgrade: websocket",
        b"Authorization: Bearer app",
        b"traceparent: 00-0af7651916cd43dd-01",
    ]
)


@st.composite
def plain_heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"GET", b"HEAD", b"DELETE", b"TRACE"]))
    target = draw(st.sampled_from([b"/", b"/a?b=c", b"/", b"http://h/x"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    lines = [method + b" " + target + b" " + version, b"Host: h"]
    lines += draw(st.lists(PLAIN_LINES, max_size=4))
    return b"\r\n".join(lines)


@st.composite
def heads_with_ids(draw: st.DrawFn) -> bytes:
    plain = draw(st.integers(0, 3)) > 0
    head = draw(plain_heads() if plain else request_heads())
    for _ in range(draw(st.integers(1 if plain else 0, 2))):
        lines = head.split(b"\r\n")
        at = draw(st.integers(1, len(lines)))
        sep = draw(st.sampled_from([b": ", b":", b":\t", b":  "]))
        lines.insert(at, draw(ID_NAMES) + sep + draw(ID_VALUES))
        head = b"\r\n".join(lines)
    return head


def _whole(head: bytes) -> Request | None:
    try:
        req = parse_request(head, RULES)
    except ProtocolError:
        return None
    return req if fast_request(req) else None


_LINE = re.compile(rb"\r\n([^:]+):[ \t]*([^\r]*?)[ \t]*(?=\r\n|$)")


def _fields(kept: bytes) -> list[tuple[bytes, bytes]]:
    return sorted((n.lower(), v) for n, v in _LINE.findall(kept))


def _check(head: bytes, cache: RequestCache) -> None:
    whole = _whole(head)
    found = cache.find(head)
    if whole is None:
        assert found is None, head
        return
    assert found is not None, head
    req, given_id = found
    for name in FIELDS:
        assert getattr(req, name) == getattr(whole, name), (name, head)
    kept = _fields(req.kept)
    if given_id is None:
        assert req.request_id == whole.request_id, head
    else:
        assert req.request_id is None and given_id == whole.request_id, head
        kept = sorted([*kept, (b"x-request-id", given_id)])
    assert kept == _fields(whole.kept), head


@EXAMPLES
@given(heads_with_ids())
def test_cache_agrees_with_parsing_the_whole_head(head: bytes) -> None:
    _check(head, RequestCache(RULES, fast_request))  # cold: parses the head
    warm = RequestCache(RULES, fast_request)
    m = re.search(rb"\r\nX-Request-Id:[^\r]*", head)
    if m is not None:  # the head's other lines parsed already, as a previous request's
        warm.find(head[: m.start()] + head[m.end() :])
    _check(head, warm)
    _check(head, warm)  # and from the cache's own entry
    i = head.find(b"\r\n")
    if i > 0:  # the header lines parsed before, under another request line
        for line in (b"GET /warm HTTP/1.1", b"GET /warm HTTP/1.0", b"POST / HTTP/1.1"):
            relined = RequestCache(RULES, fast_request)
            relined.find(line + head[i:])
            _check(head, relined)
            _check(head, relined)


def test_heads_differing_only_in_their_id_share_one_entry() -> None:
    cache = RequestCache(RULES, fast_request)
    ids = []
    for i in range(50):
        head = b"GET /status HTTP/1.1\r\nHost: a\r\nX-Request-Id: id-%d\r\nAccept: */*" % i
        found = cache.find(head)
        assert found is not None
        ids.append(found[1])
        assert found[0].kept == b"\r\nAccept: */*"
    assert ids == [b"id-%d" % i for i in range(50)]
    assert len(cache) == 1


def test_heads_differing_only_in_their_request_line_share_one_parse_of_their_fields() -> None:
    cache = RequestCache(RULES, fast_request)
    fields = b"\r\nHost: a\r\nConnection: close\r\nAccept: */*"
    for i in range(20):
        req, _ = cache.find(b"GET /items?page=%d HTTP/1.1" % i + fields) or (None, None)
        assert req is not None and req.target == b"/items?page=%d" % i and req.method == b"GET"
        assert req.minor == 1 and not req.keep_alive and req.kept == b"\r\nAccept: */*"
    # the first head is kept whole; of the relined ones, one in ADMIT
    assert len(cache.fields) == 1 and len(cache) == 1 + 19 // ADMIT
    hot = b"GET /hot HTTP/1.1" + fields
    for _ in range(ADMIT):
        assert cache.find(hot) is not None
    assert hot in cache  # a head that repeats gets in
    # HTTP/1.0 reads the same lines differently (here: keep-alive is not the default)
    req, _ = cache.find(b"HEAD /x HTTP/1.0" + fields) or (None, None)
    assert req is not None and req.minor == 0 and req.method == b"HEAD"
    assert len(cache.fields) == 2
    keep = b"\r\nHost: a\r\nConnection: keep-alive"
    assert cache.find(b"GET /a HTTP/1.1" + keep) is not None
    req, _ = cache.find(b"GET /b HTTP/1.0" + keep) or (None, None)
    assert req is not None and req.keep_alive and req.minor == 0
    # a method or target the fast path does not take, on parsed fields: refused
    assert cache.find(b"TRACE / HTTP/1.1" + fields) is None
    assert cache.find(b"GET http://h/ HTTP/1.1" + fields) is None
    assert cache.find(b"GET /\x01 HTTP/1.1" + fields) is None
    assert cache.find(b"GET / HTTP/1.2" + fields) is None
    # a head that starts with the fields' bytes is not a lookup of them
    assert cache.find(fields) is None and cache.find(b"0" + fields) is None
    # both caches count against the one budget the metrics report
    assert cache.held == cache.used + cache.fields.used > 0


def test_an_id_that_cannot_be_taken_out_is_parsed_with_its_head() -> None:
    cache = RequestCache(RULES, fast_request)
    two = b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nx-request-id: 2"
    req, given_id = cache.find(two) or (None, None)
    assert req is not None and given_id is None and req.request_id == b"2"
    assert req.kept.count(b"equest-") == 2  # both passed on, as parse_request does
    empty = b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: "
    req, given_id = cache.find(empty) or (None, None)
    assert req is not None and given_id is None and req.request_id == b""
    assert cache.find(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: a\x01b") is None
    assert cache.find(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: a\rb") is None
    hashed = RequestCache(RequestRules([], b"X-Request-Id", False), fast_request)
    req, given_id = hashed.find(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: k") or (None, None)
    assert req is not None and given_id is None and req.hash_value == b"k"


# -- through the fast path -------------------------------------------------------------


class _Transport:
    """Records what is written, and when the connection was closed."""

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.events.append(data)

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if key == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append(b"<close>")
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading


RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


async def _fast_path() -> tuple[Any, Any, _Transport, _Transport]:
    from podkit.ambassadors.proxy.httpproxy import ClientConn, HttpListener
    from podkit.ambassadors.proxy.settings import Settings
    from podkit.ambassadors.proxy.upstream import UpstreamConn

    values = {**Settings().values(), "upstream": ["http://127.0.0.1:9"], "listen": "127.0.0.1:0"}
    lst = HttpListener(Settings.build(values, ""))
    lst.refresh_suffixes()
    up = lst.upstreams[0]
    uc = UpstreamConn(up)
    ut = _Transport()
    uc.connection_made(ut)
    up.nconns += 1
    up.release(uc, 0.0)
    cc = ClientConn(lst)
    ct = _Transport()
    cc.connection_made(ct)
    lst.conns.discard(cc)
    cc.waiter = lst.loop.create_future()  # as if its coroutine waited for a head
    return lst, cc, ct, ut


async def _turn() -> None:
    await asyncio.sleep(0)


def test_client_ids_reach_the_upstream_once_and_the_log_escaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from podkit.ambassadors.proxy import httpproxy

    # the access log's lines as it holds them before its batched write (read, not
    # replaced: the compiled build's classes take no method patched in)
    log = httpproxy.ACCESS_LOG
    log.flush()
    monkeypatch.setattr(log, "size", 0)
    lines: list[str] = []

    async def main() -> None:
        lst, cc, ct, ut = await _fast_path()
        uc = lst.upstreams[0].idle[0]
        for rid in (b"first", b'q"uote'):
            cc.data_received(b"GET /a HTTP/1.1\r\nHost: h\r\nX-Request-Id: " + rid + b"\r\n\r\n")
            assert cc.fast is not None, "served by the fast path"
            assert not ut.events, "held until the loop's turn ends"
            await _turn()
            head = ut.events.pop()
            assert head.count(b"X-Request-Id") == 1 and b"\r\nX-Request-Id: " + rid in head
            uc.data_received(RESPONSE)
            await _turn()
            assert ct.events.pop().endswith(b"ok\n")
        assert len(lst.head_cache) == 1
        lines.extend(log.lines)  # before the 20 ms batch is written
        for t in asyncio.all_tasks() - {asyncio.current_task()}:
            t.cancel()

    with contextlib.redirect_stderr(io.StringIO()):
        asyncio.run(main())
        log.flush()
    assert [json.loads(line)["request_id"] for line in lines] == ["first", 'q"uote']


def test_a_held_response_goes_out_before_the_connection_closes() -> None:
    async def main() -> None:
        lst, cc, ct, _ = await _fast_path()
        uc = lst.upstreams[0].idle[0]
        cc.data_received(b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert cc.fast is not None
        await _turn()
        uc.data_received(RESPONSE)  # the client asked to close: answered, then closed
        assert ct.events[-1] == b"<close>" and ct.events[0].endswith(b"ok\n")
        for t in asyncio.all_tasks() - {asyncio.current_task()}:
            t.cancel()

    asyncio.run(main())


def test_the_id_line_counts_against_max_headers() -> None:
    cache = RequestCache(RequestRules([], None, False, max_headers=2), fast_request)
    assert cache.find(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*") is not None  # 2 lines
    # one more line is one too many, though the head without it is cached
    assert cache.find(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Request-Id: 1") is None


@given(st.binary(max_size=24) | st.sampled_from([b"/a?b=c", b'q"', b"b\\s", b"\x7f", b"\x1f"]))
def test_access_log_strings_are_the_json_of_their_latin1_text(value: bytes) -> None:
    # the hand-made literal for plain ASCII is what json.dumps would write
    assert json_str(value) == json.dumps(value.decode("latin-1"))
    assert json.loads(json_str(value)) == value.decode("latin-1")


def test_relined_heads_keep_every_field_their_header_lines_gave() -> None:
    """What the fast path's own acceptance never lets through (an upgrade) still
    comes from the shared parse, for any `accept`; and a relined head has no log
    fields of its own yet (they are made from its request line when logged)."""
    rules = RequestRules([], b"X-Tenant", False)
    cache = RequestCache(rules, lambda req: True)
    fields = (
        b"\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nX-Tenant: t-7"
        b"\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 10.0.0.9"
    )
    first, _ = cache.find(b"GET /one HTTP/1.1" + fields) or (None, None)
    assert first is not None and first.log_head is None
    first.log_head = '"method": "GET", "path": "/one"'  # as the access log sets it
    req, _ = cache.find(b"GET /two HTTP/1.1" + fields) or (None, None)
    assert req is not None and req is not first and len(cache.fields) == 1
    assert (req.upgrade, req.hash_value, req.xfp, req.xff) == (
        b"websocket",
        b"t-7",
        b"https",
        b"10.0.0.9",
    )
    assert req.target == b"/two" and req.log_head is None


def test_the_request_caches_split_one_byte_budget() -> None:
    cache = RequestCache(RULES, fast_request, budget=4096)
    assert (cache.budget, cache.fields.budget) == (3072, 1024)


def test_one_relined_head_in_admit_is_kept_whole() -> None:
    cache = RequestCache(RULES, fast_request)
    fields = b"\r\nHost: a"
    heads = [b"GET /p?%d HTTP/1.1" % i + fields for i in range(3 * ADMIT + 1)]
    found = [cache.find(h) for h in heads]
    assert all(f is not None for f in found)
    # the first is parsed whole and kept; of the relined ones, the ADMIT-th,
    # the 2*ADMIT-th, ...
    kept = [i for i, h in enumerate(heads) if h in cache]
    assert kept == [0, ADMIT, 2 * ADMIT, 3 * ADMIT]
    for i in kept:
        req = cache[heads[i]]
        assert req is not None and req.target == b"/p?%d" % i


def test_a_head_without_header_lines_is_parsed_whole() -> None:
    cache = RequestCache(RULES, fast_request)
    req, _ = cache.find(b"GET /bare HTTP/1.0") or (None, None)
    assert req is not None and req.minor == 0 and req.kept == b""
    assert cache.find(b"GET /bare HTTP/1.1") is None  # 1.1 needs a Host


def test_the_upstream_head_is_the_same_whether_the_request_is_joined_fast_or_not() -> None:
    """The usual request (no body, no upgrade, no X-Forwarded-* from the app) is
    joined in one piece; the others line by line. Both give the same lines in the
    same order: the app's kept lines, its id (or the one the proxy made), then
    X-Forwarded-For and -Proto, then the upstream's own lines."""

    async def main() -> list[bytes]:
        lst, cc, _ct, ut = await _fast_path()
        up = lst.upstreams[0]
        uc = up.idle[0]
        heads = []
        for extra in (
            b"\r\nX-Request-Id: mine",  # the app's id: passed on where it was
            b"\r\nX-Request-Id: mine\r\nAccept: */*",  # the id taken out, put back last
            b"\r\nAccept: */*",  # an id the proxy makes
            b"\r\nX-Forwarded-For: 10.1.1.1\r\nX-Request-Id: r2",  # the other way
            b"\r\nX-Forwarded-Proto: https\r\nX-Request-Id: r3",
        ):
            cc.data_received(b"GET /a?b HTTP/1.1\r\nHost: h" + extra + b"\r\n\r\n")
            assert cc.fast is not None, "served by the fast path"
            await _turn()
            head = ut.events.pop()
            assert head.endswith(up.suffix + b"\r\n"), head
            heads.append(head[: -len(up.suffix) - 2])
            uc.data_received(RESPONSE)
            await _turn()
        for t in asyncio.all_tasks() - {asyncio.current_task()}:
            t.cancel()
        return heads

    with contextlib.redirect_stderr(io.StringIO()):
        heads = asyncio.run(main())
    fwd = b"\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
    start = b"GET /a?b HTTP/1.1"
    assert heads[0] == start + b"\r\nX-Request-Id: mine" + fwd
    assert heads[1] == start + b"\r\nAccept: */*\r\nX-Request-Id: mine" + fwd
    made = re.fullmatch(
        rb"GET /a\?b HTTP/1\.1\r\nAccept: \*/\*\r\nX-Request-Id: ([^\r]+)(.*)", heads[2], re.S
    )
    assert made is not None and made.group(2) == fwd, heads[2]
    assert heads[3] == (
        start + b"\r\nX-Request-Id: r2\r\nX-Forwarded-For: 10.1.1.1, 127.0.0.1"
        b"\r\nX-Forwarded-Proto: http\r\n"
    )
    assert heads[4] == (
        start + b"\r\nX-Request-Id: r3\r\nX-Forwarded-For: 127.0.0.1"
        b"\r\nX-Forwarded-Proto: https, http\r\n"
    )


def test_a_cached_head_followed_by_a_pipelined_one_is_left_to_the_coroutine() -> None:
    """The fast path checks the size and the single head only of heads it has not
    cached: two heads in one read are never a cached key, so they still go to the
    coroutine, which answers them in order."""

    async def main() -> None:
        lst, cc, ct, ut = await _fast_path()
        one = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
        cc.data_received(one)
        assert cc.fast is not None and one[:-4] in lst.head_cache
        await _turn()
        uc = cc.fast.uc
        uc.data_received(RESPONSE)
        await _turn()
        assert ct.events.pop().endswith(b"ok\n") and cc.fast is None
        ut.events.clear()
        cc.data_received(one + one)  # the cached head, then a pipelined copy of it
        await _turn()
        # one head at a time goes upstream, never the two read as one
        assert all(e.count(b"\r\n\r\n") == 1 and e.endswith(b"\r\n\r\n") for e in ut.events)
        assert one + one[:-4] not in lst.head_cache
        big = b"GET /" + b"a" * (lst.max_header_bytes + 10) + b" HTTP/1.1\r\nHost: h\r\n\r\n"
        assert not cc.try_fast(big)  # over --max-header-bytes: not looked at further

    asyncio.run(main())
