"""OptionGroup.from_mapping: a group's values from a YAML mapping, checked and
defaulted exactly as its flags are (one declaration for flag, env and key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podkit import OptionGroup, UsageError, configfile, option
from podkit.http import AuthOptions, TLSClientOptions
from podkit.tailer.config import TailingOptions


class Reading(OptionGroup):
    path: list[str] = option(repeat=True, help="globs")
    state_dir: str | None = option("/var/lib/x", kind="path", help="checkpoints")
    poll_interval: float = option("1s", kind="duration", min=0.01, help="poll")
    mode: str = option("head", choices=("head", "tail"), help="where to start")
    follow: bool = option(False, help="follow links")

    def check(self) -> None:
        if self.follow and self.mode == "tail":
            raise UsageError(f"{self.flag('follow')}: not with {self.flag('mode')} tail")


def test_defaults_are_the_options_own_converted_like_a_flags() -> None:
    r = Reading.from_mapping({})
    assert r == Reading(
        path=[], state_dir="/var/lib/x", poll_interval=1.0, mode="head", follow=False
    )


def test_keys_are_converted_checked_and_spelled_either_way() -> None:
    r = Reading.from_mapping(
        {"path": "/var/log/a,b.log", "poll-interval": "250ms", "follow": "yes", "other": 1}
    )
    # A YAML scalar where a list belongs is one item: no comma splitting.
    assert r.path == ["/var/log/a,b.log"]
    assert r.poll_interval == 0.25 and r.follow is True
    assert Reading.keys() == ("path", "state_dir", "poll_interval", "mode", "follow")
    assert TailingOptions.keys()[:2] == ("path", "exclude")


def test_a_null_is_an_absent_key_and_defaults_can_be_replaced() -> None:
    r = Reading.from_mapping({"state_dir": None}, defaults={"state_dir": None})
    assert r.state_dir is None
    with pytest.raises(TypeError, match="no options"):
        Reading.from_mapping({}, defaults={"nope": 1})


def test_prefix_and_base_dir() -> None:
    r = Reading.from_mapping({"r_state_dir": "cp", "r_mode": "tail"}, prefix="r_", base_dir="/etc")
    assert r.state_dir == "/etc/cp" and r.mode == "tail"
    assert Reading.from_mapping({"state_dir": "/abs"}, base_dir="/etc").state_dir == "/abs"


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        ({"poll_interval": "1ms"}, r"^sources\[1\]\.poll_interval: 0\.001 is below the minimum"),
        ({"poll_interval": [1]}, r"^sources\[1\]\.poll_interval: not a duration"),
        ({"mode": "middle"}, r"^sources\[1\]\.mode: 'middle' is not one of head, tail"),
        ({"follow": True, "mode": "tail"}, r"^sources\[1\]\.follow: not with sources\[1\]\.mode"),
    ],
)
def test_errors_name_the_key_path(data: dict[str, Any], msg: str) -> None:
    with pytest.raises(UsageError, match=msg):
        Reading.from_mapping(data, "sources[1]")


def test_core_groups_cross_checks_name_keys_not_flags() -> None:
    with pytest.raises(UsageError, match=r"^key_file: needs cert_file$"):
        TLSClientOptions.from_mapping({"key_file": "/k.pem"})
    with pytest.raises(UsageError, match=r"^s\.buffer_max_bytes: must be at least s\.max_line"):
        TailingOptions.from_mapping({"buffer_max_bytes": "1KiB", "max_line_bytes": "2KiB"}, "s")


def test_inside_located_an_error_names_file_line_and_key(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("sources:\n- type: log\n  mode: head\n- type: log\n  mode: sideways\n")
    cf = configfile.load(str(f), "--config")
    with pytest.raises(UsageError) as err, cf.located():
        for i, item in enumerate(cf.data["sources"]):
            Reading.from_mapping(item, f"sources[{i}]")
    assert str(err.value) == (
        f"--config {f}:5: sources[1].mode: 'sideways' is not one of head, tail"
    )


def test_a_rule_over_two_keys_is_located_at_the_first(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("top: 1\nauth:\n  basic_auth_user: u\n")
    cf = configfile.load(str(f), "--config")
    with pytest.raises(UsageError) as err, cf.located():
        AuthOptions.from_mapping(cf.data["auth"], "auth")
    assert str(err.value) == (
        f"--config {f}:3: auth.basic_auth_user and auth.basic_auth_password_file: "
        "give both or neither"
    )
    with pytest.raises(UsageError, match=rf"^--config {f}: no such thing: x$"), cf.located():
        raise UsageError("no such thing: x")
