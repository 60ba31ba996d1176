"""Option groups and range checks: settings declared once, for every program."""

from __future__ import annotations

from typing import Any

import pytest

from podkit import OptionGroup, Sidecar, UsageError, option
from podkit.runner import configure


class Client(OptionGroup):
    """A client's connection settings, as a core group would declare them."""

    ca_file: str | None = option(kind="path", help="CA bundle")
    cert_file: str | None = option(kind="path", help="client certificate")
    key_file: str | None = option(kind="path", help="its key")
    timeout: float = option("5s", kind="duration", min=0.001, help="per request")

    def check(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise UsageError(f"{self.flag('cert_file')} and {self.flag('key_file')} go together")


def _even(v: int) -> None:
    if v % 2:
        raise ValueError(f"{v} is not even")


class Prog(Sidecar):
    name = "groups"
    upstream: Client = Client.include(prefix="upstream-")
    sink: Client = Client.include()
    workers: int = option(1, min=1, max=64, help="how many")
    pairs: int = option(2, validator=_even, help="an even number")

    async def run(self) -> None:
        pass


def cfg(*argv: str, env: dict[str, str] | None = None, **kw: Any) -> Prog:
    program = configure(Prog, list(argv), env or {})
    assert isinstance(program, Prog)
    return program


def test_a_group_arrives_as_one_typed_object_under_its_prefix() -> None:
    p = cfg("--upstream-ca-file", "/ca.pem", "--ca-file", "/other.pem", "--timeout", "250ms")
    assert isinstance(p.upstream, Client) and isinstance(p.sink, Client)
    assert p.upstream.ca_file == "/ca.pem" and p.upstream.timeout == 5.0
    assert p.sink.ca_file == "/other.pem" and p.sink.timeout == 0.25


def test_a_group_option_is_read_from_env_and_config_like_any_other(tmp_path: Any) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("upstream-timeout: 2s\n")
    p = cfg("--config", str(conf), env={"PODKIT_UPSTREAM_CA_FILE": "/env.pem"})
    assert p.upstream.ca_file == "/env.pem"
    assert p.upstream.timeout == 2.0


def test_the_groups_default_is_declared_once() -> None:
    # One declaration, two places, the same default.
    assert cfg().upstream.timeout == cfg().sink.timeout == 5.0
    flags = {o.flag_name for o in Prog.options()}
    assert {"--upstream-ca-file", "--ca-file", "--upstream-timeout", "--timeout"} <= flags


def test_a_groups_check_names_the_prefixed_flags() -> None:
    with pytest.raises(UsageError, match="--upstream-cert-file and --upstream-key-file"):
        cfg("--upstream-cert-file", "/c.pem")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers: 0 is below the minimum 1"),
        (["--workers", "65"], {}, "--workers: 65 is above the maximum 64"),
        ([], {"PODKIT_WORKERS": "0"}, "PODKIT_WORKERS: 0 is below the minimum 1"),
        (["--upstream-timeout", "0s"], {}, "--upstream-timeout: 0.0 is below the minimum"),
        (["--pairs", "3"], {}, "--pairs: 3 is not even"),
    ],
)
def test_range_and_validator_errors_name_their_source(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        cfg(*argv, env=env)
