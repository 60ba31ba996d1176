"""The proxy fast path's Python cost per request, without sockets or a peer.

One client connection and one pooled upstream connection with stand-in transports;
each request's head goes into the client side's data_received and a fixed 200
response into the upstream side's, so what is timed is the proxy's own work: parse
(or head cache), pick, the head for the upstream, the response, metrics and the
access-log line. CPU time (process_time), best of --repeat, for identical heads,
unique ones (a different X-Request-Id each, or a different query string each, as
bench_proxy's `#unique` and `#paths`) with the access log off and on. The kernel's
share of a real request (about 10-11 us on loopback, as much as HAProxy's) is not in
these figures; bench_proxy.py measures the whole against HAProxy.

    .venv/bin/python bench/bench_proxy_fastpath.py [--requests 20000] [--repeat 5]

"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from typing import Any

from podkit.ambassadors.proxy import accesslog
from podkit.ambassadors.proxy.httpproxy import ClientConn, HttpListener
from podkit.ambassadors.proxy.settings import Settings
from podkit.ambassadors.proxy.upstream import UpstreamConn

TURN = 8
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
)


class Transport:
    """Accepts every write; the peer address is loopback."""

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: Any) -> None:
        pass

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if key == "peername" else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    abort = close
    pause_reading = close
    resume_reading = close


KINDS = ("identical", "unique ids", "unique paths")


def make_heads(kind: str, n: int) -> list[bytes]:
    rest = b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    if kind == "unique ids":
        return [b"GET /status" + rest + b"X-Request-Id: %08d\r\n\r\n" % i for i in range(n)]
    if kind == "unique paths":
        return [b"GET /status?%d" % i + rest + b"\r\n" for i in range(n)]
    return [b"GET /status" + rest + b"\r\n"] * n


async def per_request(kind: str, log: bool, n: int) -> float:
    values = {**Settings().values(), "upstream": ["http://127.0.0.1:9"], "access_log": log}
    lst = HttpListener(Settings.build({**values, "listen": "127.0.0.1:0"}, ""))
    lst.refresh_suffixes()
    up = lst.upstreams[0]
    uc = UpstreamConn(up)
    uc.connection_made(Transport())
    up.nconns += 1
    up.release(uc, 0.0)
    cc = ClientConn(lst)
    cc.connection_made(Transport())
    lst.conns.discard(cc)
    cc.waiter = lst.loop.create_future()  # as if its coroutine waited for a head
    heads = make_heads(kind, n)
    # The loop flushes held writes once a turn, and a turn under wrk's load serves
    # several requests (one epoll_wait per 8-10 requests): here every TURN requests.
    flush = lst.cork.flush if hasattr(lst, "cork") else (lambda: None)
    t = time.process_time()
    for i, h in enumerate(heads):
        cc.data_received(h)
        assert cc.fast is not None, "not served by the fast path"
        uc.data_received(RESPONSE)
        if i % TURN == 0:
            flush()
    took = time.process_time() - t
    accesslog.ACCESS_LOG.flush()
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()
    return took / n * 1e6


def loop_factory() -> Any:
    """The loop the proxy runs on: uvloop when installed (its call_soon is C, and the
    held writes schedule one flush per loop turn)."""
    if os.environ.get("PODKIT_EVENT_LOOP") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    best: dict[tuple[str, bool], float] = {}
    # the access log's batched writes are part of the cost: they go to /dev/null
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        for _ in range(args.repeat):
            for kind in KINDS:
                for log in (False, True):
                    with asyncio.Runner(loop_factory=loop_factory()) as runner:
                        us = runner.run(per_request(kind, log, args.requests))
                    best[(kind, log)] = min(best.get((kind, log), us), us)
    loop = "uvloop" if loop_factory() else "asyncio"
    print(
        f"load average {os.getloadavg()[0]:.1f}; {loop}; CPU us per request, best of {args.repeat}"
    )
    for (kind, log), us in best.items():
        print(f"  {kind}, log {'on' if log else 'off'}: {us:.2f}")


if __name__ == "__main__":
    main()
