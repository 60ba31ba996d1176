"""One `NAME=FILE` parser (`podkit.http.parse_header_files`) for every program's
--header-file: logship's, the reloader's and the proxy's refuse what each
refused before, in the same words (issue 20: settings declared once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from podkit.ambassadors.proxy import Proxy
from podkit.sidecars.logship import LogShip
from podkit.sidecars.reloader import Reloader

from podkit.http import HOP_BY_HOP, parse_header_files
from podkit.options import UsageError
from podkit.runner import configure


@pytest.fixture(autouse=True)
def _no_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("POD_NAME", "POD_NAMESPACE", "NODE_NAME", "CONTAINER_NAME"):
        monkeypatch.delenv(var, raising=False)


def test_the_parser_reads_names_and_files() -> None:
    got = parse_header_files(["X-Api-Key=/s/key", " X-Org =/s/org=x"])
    assert got == {"X-Api-Key": "/s/key", "X-Org": "/s/org=x"}  # the path may hold '='


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["X-Key"], "--header-file: expected NAME=FILE with a header name, got 'X-Key'"),
        (["X-Key="], "expected NAME=FILE"),
        (["=/f"], "expected NAME=FILE"),
        (["X Key=/f"], "expected NAME=FILE"),
        (["X:Key=/f"], "expected NAME=FILE"),
        (["Content-Length=/f"], "--header-file: Content-Length cannot be set"),
        (["connection=/f"], "--header-file: connection cannot be set"),
        (["X-K=/a", "x-K=/b"], "--header-file: x-K is set twice"),
    ],
)
def test_the_parser_refuses(items: list[str], message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_header_files(items)
    assert message in str(exc.value)


def test_a_program_adds_the_names_it_writes_and_those_set_another_way() -> None:
    assert "host" in HOP_BY_HOP and "x-forwarded-for" not in HOP_BY_HOP
    assert parse_header_files(["X-Forwarded-For=/f"]) == {"X-Forwarded-For": "/f"}
    with pytest.raises(UsageError, match="X-Forwarded-For cannot be set"):
        parse_header_files(["X-Forwarded-For=/f"], refused=("x-forwarded-for",))
    with pytest.raises(UsageError, match=r"X-K is set twice \(or by --set-header\)"):
        parse_header_files(["X-K=/f"], taken=["x-k"], taken_by="--set-header")


def _logship(argv: list[str]) -> None:
    configure(LogShip, ["--path", "/x/*.log", "--sink", "http://h/x", *argv], env={})


def _reloader(argv: list[str]) -> None:
    configure(Reloader, ["--watch", "/x", "--webhook-url", "http://h/", *argv], env={})


def _proxy(argv: list[str]) -> None:
    configure(Proxy, ["--upstream", "http://a:1", *argv], env={})


PROGRAMS = {"logship": _logship, "reloader": _reloader, "proxy": _proxy}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("X-Key", "--header-file: expected NAME=FILE with a header name, got 'X-Key'"),
        ("X Key={f}", "--header-file: expected NAME=FILE"),
        ("Host={f}", "Host cannot be set"),
        ("Transfer-Encoding={f}", "Transfer-Encoding cannot be set"),
    ],
)
def test_every_program_refuses_a_bad_item_in_the_same_words(
    name: str, item: str, message: str, tmp_path: Path
) -> None:
    f = tmp_path / "f"
    f.write_text("v\n")
    with pytest.raises(UsageError) as exc:
        PROGRAMS[name](["--header-file", item.format(f=f)])
    assert message in str(exc.value)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_program_refuses_a_header_given_twice(name: str, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("v\n")
    with pytest.raises(UsageError, match="x-k is set twice"):
        PROGRAMS[name](["--header-file", f"X-K={f}", "--header-file", f"x-k={f}"])


def test_only_the_proxy_refuses_the_forwarded_headers_it_writes(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("v\n")
    with pytest.raises(UsageError, match="--header-file: X-Forwarded-For cannot be set"):
        _proxy(["--header-file", f"X-Forwarded-For={f}"])
    _logship(["--header-file", f"X-Forwarded-For={f}"])
    _reloader(["--header-file", f"X-Forwarded-For={f}"])


def test_the_proxy_keeps_its_set_header_clash(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("v\n")
    with pytest.raises(UsageError, match=r"X-K is set twice \(or by --set-header\)"):
        _proxy(["--header-file", f"X-K={f}", "--set-header", "x-k: 1"])
