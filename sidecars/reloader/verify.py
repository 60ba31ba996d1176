"""--verify-url: did the app take the new config?

As the Thanos reloader does with Prometheus' runtimeinfo
(`reloadConfigSuccess`, `lastConfigTime`): read the app's state before the
reload, then poll it until the conditions hold *and* the timestamp has moved
past the one read before. A state that was good before and is bad now fails
at once (the app rejected the config); otherwise the check gives up after
`--verify-timeout`. Either way the reload counts as failed and is retried.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from podkit.checks import (
    JSONCondition,
    MetricCondition,
    Sample,
    as_time,
    load_json,
    lookup,
    parse_path,
)
from podkit.hooks import HookError
from podkit.httpclient import HTTPClientError, fetch
from podkit.secrets import redact_url

POLL = 0.25


class Verifier:
    def __init__(
        self,
        url: str,
        json_conditions: list[JSONCondition],
        metric_conditions: list[MetricCondition],
        timestamp: str | None,
        timeout: float,
        headers: dict[str, str],
    ) -> None:
        self.url = url
        self.json_conditions = json_conditions
        self.metric_conditions = metric_conditions
        self.timeout = timeout
        self.headers = headers
        self._ts_path: list[str | int] | None = None
        self._ts_sample: Sample | None = None
        if timestamp is not None:
            if timestamp.startswith("$"):
                self._ts_path = parse_path(timestamp)
            else:
                self._ts_sample = Sample.parse(timestamp)
        self.timestamp = timestamp
        self._before_ok: bool | None = None
        self._before_ts: float | None = None

    async def read(self) -> tuple[bool, float | None, str]:
        """(conditions hold, timestamp, what was seen); raises HookError if unreadable."""
        try:
            res = await fetch("GET", self.url, headers=self.headers, timeout=min(5.0, self.timeout))
        except (OSError, TimeoutError, HTTPClientError) as exc:
            raise HookError(f"--verify-url {redact_url(self.url)}: {exc!r}") from None
        if res.status // 100 != 2:
            raise HookError(f"--verify-url {redact_url(self.url)}: status {res.status}")
        seen: list[str] = []
        ok = True
        doc: Any = None
        if self.json_conditions or self._ts_path is not None:
            try:
                doc = load_json(res.body)
            except ValueError as exc:
                raise HookError(f"--verify-url {redact_url(self.url)}: not JSON: {exc}") from None
        text = (
            res.body.decode("utf-8", "replace")
            if (self.metric_conditions or self._ts_sample is not None)
            else ""
        )
        for jc in self.json_conditions:
            holds, actual = jc.test(doc)
            ok = ok and holds
            seen.append(f"{jc.text} (found {actual!r})")
        for mc in self.metric_conditions:
            holds, value = mc.test(text)
            ok = ok and holds
            seen.append(f"{mc.text} (found {value!r})")
        ts: float | None = None
        if self._ts_path is not None:
            ts = as_time(lookup(doc, self._ts_path))
        elif self._ts_sample is not None:
            ts = self._ts_sample.find(text)
        if self.timestamp is not None:
            seen.append(f"{self.timestamp} = {ts!r}")
        return ok, ts, "; ".join(seen)

    async def before(self) -> None:
        """Remember the app's state before the reload (unknown if it cannot be read)."""
        try:
            self._before_ok, self._before_ts, _ = await self.read()
        except HookError:
            self._before_ok, self._before_ts = None, None

    async def after(self) -> None:
        """Return once the app reports the new config applied; raise HookError if it did not."""
        deadline = time.monotonic() + self.timeout
        detail = "not read"
        while True:
            try:
                ok, ts, detail = await self.read()
            except HookError as exc:  # restarting, say: keep asking until the deadline
                ok, ts, detail = False, None, str(exc)
            else:
                advanced = self.timestamp is None or (
                    ts is not None and (self._before_ts is None or ts > self._before_ts)
                )
                if ok and advanced:
                    return
                if self._before_ok and not ok:
                    # It was good before the reload and is bad now: the app
                    # tried the new config and rejected it.
                    raise HookError(f"the app rejected the new config: {detail}")
            if time.monotonic() >= deadline:
                raise HookError(
                    f"the app did not take the new config within {self.timeout:g}s: {detail}"
                )
            await asyncio.sleep(POLL)
