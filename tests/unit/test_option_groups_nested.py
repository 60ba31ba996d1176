"""Option groups inside option groups: a group that needs a TLS client (a
webhook, the proxy's upstreams) includes the core's group instead of
declaring its options again, and the prefixes compose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podkit import OptionGroup, Sidecar, UsageError, option
from podkit.http import TLSClientOptions
from podkit.runner import configure


class Webhook(OptionGroup):
    """A group that talks to a server, so it holds a TLS client group."""

    url: str | None = option(None, kind="url", help="where to send")
    tls: TLSClientOptions = TLSClientOptions.include(prefix="tls-", about="the webhook")
    retries: int = option(3, min=0, help="retries")

    def check(self) -> None:
        if self.retries and not self.url:
            raise UsageError(f"{self.flag('retries')} needs {self.flag('url')}")


class Upstream(OptionGroup):
    """Options named as a tool it replaces named them: no prefix on the TLS files."""

    tls: TLSClientOptions = TLSClientOptions.include(omit=("insecure",))
    sni: str | None = option(None, help="server name")


class Prog(Sidecar):
    name = "nested"
    hook: Webhook = Webhook.include(prefix="hook-")
    # the group's flattened names renamed on this program
    alt: Webhook = Webhook.include(
        prefix="alt-", names={"tls_ca_file": "trust_file", "url": "endpoint"}
    )
    up: Upstream = Upstream.include()

    async def run(self) -> None:
        pass


def cfg(*argv: str, env: dict[str, str] | None = None) -> Prog:
    program = configure(
        Prog, ["--hook-url", "http://h/", "--alt-endpoint", "http://a/", *argv], env or {}
    )
    assert isinstance(program, Prog)
    return program


def test_prefixes_compose_into_flags_env_names_and_config_keys() -> None:
    opts = {o.flag_name: o for o in Prog.options()}
    assert {"--hook-tls-ca-file", "--hook-tls-cert-file", "--hook-tls-insecure"} <= set(opts)
    assert opts["--hook-tls-ca-file"].env_name == "PODKIT_HOOK_TLS_CA_FILE"
    assert opts["--hook-tls-ca-file"].config_key == "hook-tls-ca-file"
    # the inner group's own help, with the outer include's `about`
    assert "the webhook" in opts["--hook-tls-ca-file"].help


def test_a_nested_group_arrives_as_its_own_typed_object() -> None:
    p = cfg("--hook-tls-ca-file", "/ca.pem", "--hook-tls-insecure", "--hook-retries", "1")
    assert isinstance(p.hook, Webhook) and isinstance(p.hook.tls, TLSClientOptions)
    assert p.hook.tls.ca_file == "/ca.pem" and p.hook.tls.insecure is True
    assert p.hook.retries == 1 and p.hook.url == "http://h/"
    assert p.alt.tls.ca_file is None and p.alt.tls.insecure is False  # its own defaults


def test_nested_options_come_from_env_and_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("hook-tls-cert-file: /c.pem\nhook-tls-key-file: /k.pem\n")
    p = cfg("--config", str(conf), env={"PODKIT_HOOK_TLS_CA_FILE": "/env.pem"})
    assert p.hook.tls.ca_file == "/env.pem"
    assert (p.hook.tls.cert_file, p.hook.tls.key_file) == ("/c.pem", "/k.pem")


def test_names_rename_a_nested_option_and_its_messages() -> None:
    flags = {o.flag_name for o in Prog.options()}
    assert "--alt-trust-file" in flags and "--alt-tls-ca-file" not in flags
    assert "--alt-endpoint" in flags and "--alt-url" not in flags
    p = configure(Prog, ["--hook-url", "http://h/", "--alt-endpoint", "http://a/"], {})
    assert isinstance(p, Prog)
    p2 = configure(
        Prog,
        ["--hook-url", "http://h/", "--alt-endpoint", "http://a/", "--alt-trust-file", "/t"],
        {},
    )
    assert isinstance(p2, Prog) and p2.alt.tls.ca_file == "/t" and p2.alt.url == "http://a/"
    assert p2.alt.flag("url") == "--alt-endpoint"
    assert p2.alt.tls.flag("ca_file") == "--alt-trust-file"
    assert p2.alt.tls.flag("key_file") == "--alt-tls-key-file"


def test_the_inner_groups_check_names_the_outer_prefixed_flag() -> None:
    with pytest.raises(UsageError, match=r"^--hook-tls-key-file: needs --hook-tls-cert-file$"):
        cfg("--hook-tls-key-file", "/k.pem")
    with pytest.raises(UsageError, match=r"^--alt-tls-key-file: needs --alt-tls-cert-file$"):
        cfg("--alt-tls-key-file", "/k.pem")
    # the outer group's own check runs too
    with pytest.raises(UsageError, match=r"^--alt-retries needs --alt-endpoint$"):
        configure(Prog, ["--hook-url", "http://h/"], {})


def test_an_omitted_option_is_no_flag_and_keeps_its_default() -> None:
    flags = {o.flag_name for o in Prog.options()}
    assert {"--ca-file", "--cert-file", "--key-file", "--sni"} <= flags
    assert "--insecure" not in flags
    p = cfg("--ca-file", "/up.pem", "--sni", "api.test")
    assert p.up.tls.ca_file == "/up.pem" and p.up.tls.insecure is False
    assert p.up.sni == "api.test"
    with pytest.raises(UsageError, match=r"^--key-file: needs --cert-file$"):
        cfg("--key-file", "/k.pem")


def test_from_mapping_reads_nested_keys_and_names_them_in_errors() -> None:
    hook: Any = Webhook.from_mapping(
        {"url": "http://x/", "tls_ca_file": "ca.pem", "tls-insecure": True},
        "sinks[0]",
        base_dir="/etc/app",
    )
    assert isinstance(hook.tls, TLSClientOptions)
    assert hook.tls.ca_file == "/etc/app/ca.pem" and hook.tls.insecure is True
    with pytest.raises(
        UsageError, match=r"^sinks\[1\]\.tls_key_file: needs sinks\[1\]\.tls_cert_file"
    ):
        Webhook.from_mapping({"url": "http://x/", "tls_key_file": "/k"}, "sinks[1]")
    assert "tls_ca_file" in tuple(Webhook.keys())


def test_include_refuses_unknown_nested_names() -> None:
    with pytest.raises(TypeError, match="no options"):
        Webhook.include(names={"ca_file": "x"})  # the nested name is tls_ca_file
    with pytest.raises(TypeError, match="no options"):
        TLSClientOptions.include(omit=("server_name",))


def test_the_proxys_upstream_tls_is_the_core_group_under_its_old_names(tmp_path: Path) -> None:
    from podkit.ambassadors.proxy.program import Proxy
    from podkit.ambassadors.proxy.settings import Settings

    opts = {o.flag_name: o for o in Proxy.options()}
    for flag in ("--ca-file", "--cert-file", "--key-file"):
        assert opts[flag].env_name == "PODKIT_" + flag[2:].upper().replace("-", "_")
        assert opts[flag].config_key == flag[2:]
    assert "--insecure" not in opts  # an upstream's certificate is always verified
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for f in (ca, cert, key):
        f.write_text("")
    conf = tmp_path / "c.yaml"
    conf.write_text(
        f"listeners:\n- listen: 127.0.0.1:0\n  upstream: https://a:1\n  cert-file: {cert}\n"
        f"  key_file: {key}\n"
    )
    p = configure(
        Proxy,
        ["--upstream", "https://b:1", "--config", str(conf), "--listen", "127.0.0.1:0"],
        {"PODKIT_CA_FILE": str(ca)},
    )
    assert isinstance(p, Proxy)
    entry, flags = p.listener_settings
    assert isinstance(flags.upstream_tls, TLSClientOptions)
    assert flags.upstream_tls.ca_file == flags.ca_file == str(ca)  # read flat by the hot path
    assert (entry.upstream_tls.cert_file, entry.upstream_tls.key_file) == (str(cert), str(key))
    assert entry.upstream_tls.ca_file == str(ca)  # an entry starts from the flags' values
    assert Settings().upstream_tls == TLSClientOptions.of()
    with pytest.raises(UsageError, match=r"^--key-file: needs --cert-file$"):
        configure(Proxy, ["--upstream", "https://b:1", "--key-file", str(key)], {})
