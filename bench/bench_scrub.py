"""What scrubbing secrets costs a log line, against the regex alternation it replaced.

Every log record (and each batch of the proxy's access log) goes through
`podkit.secrets.scrub`. It used to be one compiled regex, an alternation of every
registered secret; that is fast for one secret (a literal search) but scans each
position against every alternative from two on. Lines are proxy access-log lines
(about 330 characters) with no secret in them, as nearly all are.

    .venv/bin/python bench/bench_scrub.py [--lines 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import re
import secrets
import time

from podkit import secrets as podkit_secrets

LINE = (
    '{"time": "2026-12-06T02:14:07.123Z", "level": "info", "program": "proxy", '
    '"message": "request", "method": "GET", "path": "/status?12345", "status": 200, '
    '"upstream": "127.0.0.1:8080", "duration_seconds": 0.000123, '
    '"upstream_seconds": 0.000123, "bytes_in": 60, "bytes_out": 130, "retries": 0, '
    '"request_id": null, "client": "127.0.0.1"}'
)


def per_line(fn: object, text: str, lines: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(20):
            fn(text)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t) / 20 / lines)
    return best * 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    text = "\n".join([LINE] * args.lines) + "\n"
    registered: list[str] = []
    print("secrets | regex alternation ns/line | podkit scrub ns/line")
    for n in (1, 2, 3, 5, 10):
        while len(registered) < n:
            value = secrets.token_urlsafe(32)
            registered.append(value)
            podkit_secrets.register_secret(value)
        alternation = "|".join(re.escape(v) for v in sorted(registered, key=len, reverse=True))
        pattern = re.compile(alternation)

        def regex(t: str, p: re.Pattern[str] = pattern) -> str:
            return p.sub("***", t)

        old = per_line(regex, text, args.lines, args.repeat)
        new = per_line(podkit_secrets.scrub, text, args.lines, args.repeat)
        print(f"{n} | {old:.0f} | {new:.0f}")


if __name__ == "__main__":
    main()
