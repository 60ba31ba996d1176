"""Unit tests of the core helpers: units, options, secrets, backoff, retrier, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest

from podkit import (
    Backoff,
    InitTask,
    RateLimited,
    SecretFile,
    Sidecar,
    UsageError,
    option,
    parse_duration,
    parse_size,
    redact_url,
    register_secret,
    scrub,
)
from podkit.hooks import Retrier
from podkit.http import parse_header
from podkit.runner import configure


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("0", 0),
        ("2", 2),
        (3, 3.0),
        ("100us", 1e-4),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10 parsecs", "", "s", "5x", "-1s", "1s5", "ms10", True])
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512KiB", 512 * 1024),
        ("1MiB", 1 << 20),
        ("10MB", 10_000_000),
        ("100", 100),
        ("1 GiB", 1 << 30),
        ("2k", 2000),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "1XB", "-5", "KiB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


class Opts(Sidecar):
    """Options test program."""

    name = "opts"
    every: float = option("5s", kind="duration", help="x")
    size: int = option("1MiB", kind="size")
    flag: bool = option(False)
    tags: list[str] = option(repeat=True)
    mapping: Any = option(None, config_only=True)
    choice: str = option("a", choices=("a", "b"))

    async def run(self) -> None:
        pass


def test_options_defaults_and_types() -> None:
    p = configure(Opts, [], env={})
    assert isinstance(p, Opts)
    assert p.every == 5.0 and p.size == 1 << 20 and p.flag is False and p.tags == []
    assert p.admin_addr == Opts.default_admin_addr and p.shutdown_timeout == 20.0


def test_options_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("every: 1m\nsize: 2KiB\ntags: [x, y]\nmapping: {a: 1}\nflag: true\n")
    p = configure(Opts, ["--config", str(cfg)], env={})
    assert (p.every, p.size, p.tags, p.mapping, p.flag) == (60, 2048, ["x", "y"], {"a": 1}, True)  # type: ignore[attr-defined]
    p = configure(Opts, ["--config", str(cfg)], env={"PODKIT_EVERY": "2s", "PODKIT_TAGS": "p,q"})
    assert (p.every, p.tags) == (2, ["p", "q"])  # type: ignore[attr-defined]
    p = configure(
        Opts,
        ["--config", str(cfg), "--every", "3s", "--tags", "z", "--flag=false"],
        env={"PODKIT_EVERY": "2s", "PODKIT_CONFIG": "/nonexistent"},
    )
    assert (p.every, p.tags, p.flag) == (3, ["z"], False)  # type: ignore[attr-defined]
    p = configure(Opts, [], env={"PODKIT_CONFIG": str(cfg)})
    assert p.every == 60  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--every", "soon"], {}, "--every"),
        ([], {"PODKIT_SIZE": "big"}, "PODKIT_SIZE"),
        (["--choice", "c"], {}, "--choice"),
        (["--mapping", "x"], {}, "--mapping"),
        (["--flag", "maybe"], {}, "--flag"),
    ],
)
def test_options_errors_name_their_source(
    argv: list[str], env: dict[str, str], needle: str
) -> None:
    with pytest.raises(UsageError, match=needle):
        configure(Opts, argv, env=env)


def test_config_unknown_key_and_bad_value(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("evry: 1s\n")
    with pytest.raises(UsageError, match="unknown setting 'evry'"):
        configure(Opts, ["--config", str(cfg)], env={})
    cfg.write_text("size: huge\n")
    with pytest.raises(UsageError, match="size"):
        configure(Opts, ["--config", str(cfg)], env={})


def test_init_task_command_split() -> None:
    class Cmd(InitTask):
        name = "cmd"
        accepts_command = True
        targets: list[str] = option(positional=True, repeat=True)

        async def run(self) -> int:
            return 0

    p = configure(Cmd, ["a", "b", "--", "app", "--flag"], env={})
    assert p.targets == ["a", "b"] and p.command == ["app", "--flag"]  # type: ignore[attr-defined]
    assert p.admin_addr == "off"


def test_secret_file_rereads_on_change(tmp_path: Path) -> None:
    # The kubelet's way: the file behind a symlink is swapped.
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "token").write_text("token-one\n")
    (tmp_path / "data").symlink_to("v1")
    link = tmp_path / "token"
    link.symlink_to("data/token")
    s = SecretFile(link)
    assert s.value() == "token-one"
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "token").write_text("token-two\n")
    (tmp_path / "data_tmp").symlink_to("v2")
    os.rename(tmp_path / "data_tmp", tmp_path / "data")
    assert s.changed()
    assert s.value() == "token-two"
    assert scrub("x token-two y token-one") == "x *** y ***"


def test_redact_url() -> None:
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("postgres://u:p@h:5432/db") == "postgres://u:***@h:5432/db"
    assert redact_url("http://h/x") == "http://h/x"
    assert redact_url("https://user@h/") == "https://user@h/"


def test_scrub_ignores_tiny_values() -> None:
    register_secret("ab")
    assert scrub("abc") == "abc"


def test_backoff_full_jitter_is_bounded_and_grows() -> None:
    b = Backoff(0.1, 2.0, rng=random.Random(1))
    caps = []
    for _ in range(8):
        caps.append(b.ceiling())
        assert 0 <= b.next() <= caps[-1]
    assert caps == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    b.reset()
    assert b.ceiling() == 0.1
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_parse_header() -> None:
    assert parse_header("X-Token: abc: def") == ("X-Token", "abc: def")
    for bad in ("nocolon", ": v", "Bad Name: v", "X: a\r\nY: b"):
        with pytest.raises(UsageError):
            parse_header(bad)


async def test_retrier_retries_until_success_and_newest_supersedes() -> None:
    calls: list[str] = []
    fail = {"n": 2}

    async def action(v: str) -> None:
        calls.append(v)
        if fail["n"] > 0:
            fail["n"] -= 1
            raise RuntimeError("down")

    r: Retrier[str] = Retrier("t", action, Backoff(0.01, 0.02))
    r.start()
    r.submit("v1")
    assert await r.idle(5)
    assert calls == ["v1", "v1", "v1"] and r.last_error is None
    # A burst of submits while idle: the newest wins, intermediate ones are skipped.
    fail["n"] = 1
    r.submit("v2")
    r.submit("v3")
    assert await r.idle(5)
    assert calls[3:] == ["v3", "v3"]  # v2 superseded before it ran; v3 failed once
    await r.stop()


async def test_retrier_never_overlaps() -> None:
    running = 0
    peak = 0

    async def action(v: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    r: Retrier[int] = Retrier("t", action, Backoff(0.01, 0.02))
    r.start()
    for i in range(20):
        r.submit(i)
        await asyncio.sleep(0.003)
    assert await r.idle(5)
    await r.stop()
    assert peak == 1


def test_rate_limited_logs_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.rl")
    rl = RateLimited(logger, interval=60)
    with caplog.at_level(logging.INFO, logger="test.rl"):
        assert rl.log("k", logging.WARNING, "down", error="x")
        assert not rl.log("k", logging.WARNING, "down", error="x")
        assert rl.log("other", logging.WARNING, "down")
    assert len(caplog.records) == 2


def test_json_formatter_fields() -> None:
    from podkit.logs import _json_formatter

    fmt = _json_formatter()
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("w",), None)
    rec.program = "prog"
    rec.target = "tcp://h:1"
    out = json.loads(fmt.format(rec))
    assert out["level"] == "warning" and out["message"] == "hello w"
    assert out["program"] == "prog" and out["target"] == "tcp://h:1"
    assert out["time"].endswith("Z")
