"""Time, level, name and number normalisation, and the stdin line splitter."""
# ruff: noqa: E501  (tables of real log lines read best unwrapped)

from __future__ import annotations

import time

import pytest
from podkit.adapters.logformat.stdin import LineSplitter

from podkit.logparse.schema import norm_level, number, snake
from podkit.logparse.timeparse import Clock, parse_timezone


@pytest.mark.parametrize(
    ("text", "tz", "expected"),
    [
        ("2024-01-02T03:04:05Z", "UTC", "2024-01-02T03:04:05Z"),
        ("2024-01-02T03:04:05.123456789Z", "UTC", "2024-01-02T03:04:05.123456789Z"),
        ("2024-01-02T03:04:05.1234567891234Z", "UTC", "2024-01-02T03:04:05.123456789Z"),
        ("2024-01-02 03:04:05,250", "UTC", "2024-01-02T03:04:05.250Z"),
        ("2024-01-02T03:04:05+05:30", "UTC", "2024-01-01T21:34:05Z"),
        ("2024-01-02T03:04:05-0800", "UTC", "2024-01-02T11:04:05Z"),
        ("2024-01-02T03:04:05", "+02:00", "2024-01-02T01:04:05Z"),
        ("2024-07-02T03:04:05", "Europe/Berlin", "2024-07-02T01:04:05Z"),  # summer time
        ("2024-01-02T03:04:05", "Europe/Berlin", "2024-01-02T02:04:05Z"),
        ("2024-13-02T03:04:05Z", "UTC", None),
        ("yesterday", "UTC", None),
    ],
)
def test_iso(text: str, tz: str, expected: str | None) -> None:
    assert Clock(parse_timezone(tz)).iso(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1700000000, "2023-11-14T22:13:20Z"),
        (1700000000.25, "2023-11-14T22:13:20.25Z"),
        ("1700000000.000001", "2023-11-14T22:13:20.000001Z"),
        (1700000000123, "2023-11-14T22:13:20.123Z"),
        (1700000000123456, "2023-11-14T22:13:20.123456Z"),
        (1700000000123456789, "2023-11-14T22:13:20.123456789Z"),
        (True, None),
        ("12ab", None),
    ],
)
def test_epoch(value: object, expected: str | None) -> None:
    assert Clock().epoch(value) == expected


def test_custom_time_format() -> None:
    c = Clock(parse_timezone("+01:00"), "%d/%b/%Y:%H:%M:%S.%f")
    assert c.custom("02/Jan/2024:03:04:05.5") == "2024-01-02T02:04:05.5Z"
    assert Clock(time_format="%Y%m%d %H%M%S %z").custom("20240102 030405 +0000") == (
        "2024-01-02T03:04:05Z"
    )
    assert Clock(time_format="%H:%M").custom("nope") is None
    assert Clock(time_format="unix_ms").any("1700000000123") == "2023-11-14T22:13:20.123Z"
    # No year in the format: this year, or last year for a month well ahead of now
    mon = time.gmtime().tm_mon
    got = Clock(time_format="%m-%d %H:%M:%S").custom(f"{mon:02d}-01 00:00:00")
    assert got == f"{time.gmtime().tm_year}-{mon:02d}-01T00:00:00Z"


def test_timezone_errors() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_timezone("Mars/Olympus")
    assert parse_timezone("local") is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("WARN", "warning"), ("warning", "warning"), ("E", "error"), ("err", "error"),
        ("FATAL", "critical"), ("emerg", "critical"), ("notice", "info"), ("trace", "debug"),
        (0, "critical"), (3, "error"), (4, "warning"), (6, "info"), (7, "debug"),
        (10, "debug"), (30, "info"), (40, "warning"), (50, "error"), (60, "critical"),
        ("[error]", "error"), ("bogus", None), (None, None), (True, None),
    ],
)  # fmt: skip
def test_levels(value: object, expected: str | None) -> None:
    assert norm_level(value) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("userAgent", "user_agent"), ("User-Agent", "user_agent"), ("HTTPStatus", "http_status"),
        ("req.id", "req_id"), ("podUID", "pod_uid"), ("already_snake", "already_snake"),
        ("2xx", "f_2xx"), ("message", "field_message"), ("--", "field"),
    ],
)  # fmt: skip
def test_snake(name: str, expected: str) -> None:
    assert snake(name) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200", 200), ("-3", -3), ("1.5", 1.5), ("1e3", 1000.0), ("007", "007"), ("1.5s", "1.5s"),
        ("", ""), ("-", "-"), ("nan", "nan"), ("12345678901234567890123", "12345678901234567890123"),
    ],
)  # fmt: skip
def test_number(text: str, expected: object) -> None:
    assert number(text) == expected
    assert type(number(text)) is type(expected)


def test_line_splitter() -> None:
    s = LineSplitter(limit=10)
    assert s.feed(b"ab\ncd") == (["ab"], [])
    assert s.feed(b"e\n\xff\xfe\n") == (["cde", "\ufffd\ufffd"], [])
    # over-long line: cut, marked, the rest skipped up to its newline
    texts, trunc = s.feed(b"0123456789ABCDEF")
    assert texts == ["0123456789"] and trunc == [0]
    assert s.feed(b"GHI\nnext\n") == (["next"], [])
    # an over-long line inside one block
    texts, trunc = s.feed(b"x\n" + b"y" * 20 + b"\nz\n")
    assert texts == ["x", "y" * 10, "z"] and trunc == [1]
    # a cut through a multi-byte character drops the partial character
    texts, trunc = s.feed("123456789é\n".encode())
    assert texts == ["123456789"] and trunc == [0]
    # ... but a whole one that ends right at the cut is kept (2 and 3 bytes long)
    texts, trunc = s.feed("12345678éX\n1234567€X\n".encode())
    assert texts == ["12345678é", "1234567€"] and trunc == [0, 1]
    assert s.feed(b"tail") == ([], [])
    assert s.finish() == (["tail"], [])


def test_time_format_applies_to_values_that_looked_like_numbers() -> None:
    assert Clock(time_format="%Y%m%d%H%M%S").any(20240102030405) == "2024-01-02T03:04:05Z"
    assert Clock(time_format="unix").any(1700000000) == "2023-11-14T22:13:20Z"
