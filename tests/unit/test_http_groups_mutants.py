"""podkit/http.py's option groups and header-file parsing, asserted so that a
changed line fails a test (`make mutate`, docs/testing.md): the credential
and TLS code, where a silent bug leaks a secret or turns verification off."""

from __future__ import annotations

import base64
import os
import ssl
from pathlib import Path
from typing import Any

import pytest

from podkit.http import (
    HOP_BY_HOP,
    AuthOptions,
    TLSClientOptions,
    _check_header_file,
    parse_header,
    parse_header_files,
    ssl_context,
)
from podkit.options import UsageError
from podkit.secrets import scrub
from tests.peers.tls import TLSFiles


def _write(path: Path, text: str, mtime_ns: int | None = None) -> str:
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))  # a new mtime even on a coarse clock
    return str(path)


# --- parse_header --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("X-A: v", ("X-A", "v")),
        ("  X-A  :  two words  ", ("X-A", "two words")),
        ("X-A:v:w", ("X-A", "v:w")),  # the value may hold ':'
        ("X-A:", ("X-A", "")),
    ],
)
def test_parse_header_splits_at_the_first_colon_and_strips(
    text: str, want: tuple[str, str]
) -> None:
    assert parse_header(text) == want


@pytest.mark.parametrize("bad", ["A\rB: v", "A\nB: v", "A B: v", "A\tB: v", "X: a\r", "X: \nb"])
def test_parse_header_refuses_control_characters_in_the_name_or_value(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_header(bad, "--h")
    assert str(err.value) == f"--h: expected 'Name: value', got {bad!r}"


# --- parse_header_files ---------------------------------------------------------


def test_parse_header_files_maps_each_name_to_its_file() -> None:
    assert parse_header_files([]) == {}
    assert parse_header_files(["A=/a", "b=/b=c", " C-d =/c d"]) == {
        "A": "/a",
        "b": "/b=c",
        "C-d": "/c d",
    }
    # Every token character is allowed in a name (RFC 9110 §5.1).
    name = "Az09!#$%&'*+.^_`|~-"
    assert parse_header_files([f"{name}=/f"]) == {name: "/f"}


@pytest.mark.parametrize("item", ["X", "X=", "=/f", " =/f", "X Y=/f", "X:Y=/f", "X\rY=/f", "Ä=/f"])
def test_parse_header_files_refuses_what_is_not_name_equals_file(item: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_header_files([item], "--hf")
    assert str(err.value) == f"--hf: expected NAME=FILE with a header name, got {item!r}"
    with pytest.raises(UsageError) as err:
        parse_header_files([item])
    assert str(err.value).startswith("--header-file: expected NAME=FILE")


@pytest.mark.parametrize("name", HOP_BY_HOP)
def test_every_hop_by_hop_name_is_refused_in_any_case(name: str) -> None:
    for spelt in (name, name.upper(), name.title()):
        with pytest.raises(UsageError) as err:
            parse_header_files([f"{spelt}=/f"], "--hf")
        assert str(err.value) == f"--hf: {spelt} cannot be set"


def test_the_hop_by_hop_list_is_exactly_the_framing_and_connection_fields() -> None:
    assert HOP_BY_HOP == (
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
    )


def test_refused_and_taken_names_compare_without_case() -> None:
    with pytest.raises(UsageError) as err:
        parse_header_files(["x-own=/f"], "--hf", refused=("X-Own",))
    assert str(err.value) == "--hf: x-own cannot be set"
    # A caller's own refused list replaces the default one.
    assert parse_header_files(["Host=/f"], refused=("x-own",)) == {"Host": "/f"}
    with pytest.raises(UsageError) as err:
        parse_header_files(["x-k=/f"], "--hf", taken=("X-K",))
    assert str(err.value) == "--hf: x-k is set twice"
    with pytest.raises(UsageError) as err:
        parse_header_files(["X-K=/f"], "--hf", taken=("x-k",), taken_by="--set-header")
    assert str(err.value) == "--hf: X-K is set twice (or by --set-header)"
    assert parse_header_files(["X-K=/f"], taken=("x-j",), taken_by="--s") == {"X-K": "/f"}


def test_a_name_given_twice_is_refused_in_any_case() -> None:
    with pytest.raises(UsageError) as err:
        parse_header_files(["X-K=/a", "X-J=/j", "X-K=/b"], "--hf")
    assert str(err.value) == "--hf: X-K is set twice"
    with pytest.raises(UsageError) as err:
        parse_header_files(["x-k=/a", "X-K=/b"], "--hf")
    assert str(err.value) == "--hf: X-K is set twice"


def test_check_header_file_reports_without_a_flag() -> None:
    _check_header_file("X-K=/f")  # a good item passes
    with pytest.raises(ValueError) as err:
        _check_header_file("X-K")
    assert str(err.value) == "expected NAME=FILE with a header name, got 'X-K'"
    with pytest.raises(ValueError) as err:
        _check_header_file("Host=/f")
    assert str(err.value) == "Host cannot be set"


# --- AuthOptions.check / configured ----------------------------------------------


def test_auth_options_default_is_unconfigured_and_sends_nothing() -> None:
    auth = AuthOptions.of()
    assert auth.configured is False
    assert auth.headers() == {}


@pytest.mark.parametrize(
    "values",
    [
        {"bearer_token_file": "/t"},
        {"basic_auth_user": "u", "basic_auth_password_file": "/p"},
        {"header_file": ["X-K=/k"]},
    ],
)
def test_auth_options_configured_by_any_one_credential(values: dict[str, Any]) -> None:
    assert AuthOptions.of(**values).configured is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"basic_auth_user": "a:b", "basic_auth_password_file": "/p"},
         "--basic-auth-user: basic auth user names cannot hold ':'"),
        ({"basic_auth_user": "u"},
         "--basic-auth-user and --basic-auth-password-file: give both or neither"),
        ({"basic_auth_password_file": "/p"},
         "--basic-auth-user and --basic-auth-password-file: give both or neither"),
        ({"bearer_token_file": "/t", "basic_auth_user": "u", "basic_auth_password_file": "/p"},
         "--bearer-token-file and --basic-auth-user: give one of them, not both"),
        ({"bearer_token_file": "/t", "header_file": ["Authorization=/a"]},
         "--header-file: Authorization conflicts with --bearer-token-file"),
        ({"bearer_token_file": "/t", "header_file": ["X-K=/k", "authorization=/a"]},
         "--header-file: Authorization conflicts with --bearer-token-file"),
        ({"basic_auth_user": "u", "basic_auth_password_file": "/p",
          "header_file": ["AUTHORIZATION=/a"]},
         "--header-file: Authorization conflicts with --basic-auth-user"),
        ({"header_file": ["X-K=/a", "x-k=/b"]}, "--header-file: x-k is set twice"),
        ({"header_file": ["Host=/a"]}, "--header-file: Host cannot be set"),
    ],
)  # fmt: skip
def test_auth_options_check_refuses_conflicts(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as err:
        AuthOptions.of(**values)
    assert str(err.value) == message


def test_auth_options_check_names_the_callers_flags() -> None:
    names = {"basic_auth_user": "username", "basic_auth_password_file": "password_file"}
    with pytest.raises(UsageError) as err:
        AuthOptions.of(names, basic_auth_user="u")
    assert str(err.value) == "--username and --password-file: give both or neither"
    with pytest.raises(TypeError) as terr:
        AuthOptions.of(user="u")
    assert str(terr.value) == "AuthOptions.of: no options ['user']"


def test_an_authorization_header_file_alone_is_allowed(tmp_path: Path) -> None:
    path = _write(tmp_path / "a", "Key k1\n")
    auth = AuthOptions.of(header_file=[f"Authorization={path}"])
    assert auth.headers() == {"Authorization": "Key k1"}


# --- AuthOptions.headers -------------------------------------------------------


def test_headers_send_the_bearer_token_and_follow_the_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    auth = AuthOptions.of(bearer_token_file=_write(token, "  tok-one\n"))
    assert auth.headers() == {"Authorization": "Bearer tok-one"}
    assert auth.headers() == {"Authorization": "Bearer tok-one"}
    _write(token, "tok-two-longer\n", mtime_ns=10**9)
    assert auth.headers() == {"Authorization": "Bearer tok-two-longer"}


def test_headers_send_basic_auth_and_follow_the_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    auth = AuthOptions.of(
        basic_auth_user="alice", basic_auth_password_file=_write(pw, "s3cr3t-1\n")
    )
    first = base64.b64encode(b"alice:s3cr3t-1").decode()
    assert auth.headers() == {"Authorization": f"Basic {first}"}
    assert auth.headers() == {"Authorization": f"Basic {first}"}
    # The encoded form is as secret as the password: scrubbed from logs.
    assert scrub(f"sent {first}") == "sent ***"
    _write(pw, "s3cr3t-two\n", mtime_ns=10**9)
    second = base64.b64encode(b"alice:s3cr3t-two").decode()
    assert auth.headers() == {"Authorization": f"Basic {second}"}
    assert scrub(f"sent {second}") == "sent ***"


def test_headers_send_every_header_file_next_to_the_token(tmp_path: Path) -> None:
    key = tmp_path / "key"
    org = tmp_path / "org"
    auth = AuthOptions.of(
        bearer_token_file=_write(tmp_path / "t", "tk-xyz\n"),
        header_file=[f"X-Api-Key={_write(key, 'k-1 ')}", f"X-Org={_write(org, ' acme ')}"],
    )
    assert auth.headers() == {
        "X-Api-Key": "k-1",
        "X-Org": "acme",
        "Authorization": "Bearer tk-xyz",
    }
    _write(key, "k-2-rotated\n", mtime_ns=10**9)
    assert auth.headers()["X-Api-Key"] == "k-2-rotated"
    assert auth.headers()["X-Org"] == "acme"


def test_two_header_names_may_share_one_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "k", "same\n")
    auth = AuthOptions.of(header_file=[f"X-A={path}", f"X-B={path}"])
    assert auth.headers() == {"X-A": "same", "X-B": "same"}


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\r\nb"])
def test_headers_refuse_a_header_file_of_more_than_one_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(value.encode())
    auth = AuthOptions.of(header_file=[f"X-K={path}"])
    with pytest.raises(UsageError) as err:
        auth.headers()
    assert str(err.value) == f"--header-file X-K={path}: one line expected"


def test_headers_name_the_flag_and_file_that_cannot_be_read(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone")
    cases = [
        (AuthOptions.of(bearer_token_file=gone), "--bearer-token-file"),
        (AuthOptions.of(basic_auth_user="u", basic_auth_password_file=gone),
         "--basic-auth-password-file"),
        (AuthOptions.of(header_file=[f"X-K={gone}"]), "--header-file"),
        (AuthOptions.of(bearer_token_file=_write(tmp_path / "t", "tok\n"),
                        header_file=[f"X-K={gone}"]), "--header-file"),
        (AuthOptions.of(header_file=[f"X-J={_write(tmp_path / 'j', 'v')}"],
                        bearer_token_file=gone), "--bearer-token-file"),
    ]  # fmt: skip
    for auth, flag in cases:
        with pytest.raises(UsageError) as err:
            auth.headers()
        assert str(err.value) == f"{flag} {gone}: No such file or directory"


def test_headers_name_the_callers_flag(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone")
    auth = AuthOptions.of({"bearer_token_file": "token_file"}, bearer_token_file=gone)
    with pytest.raises(UsageError) as err:
        auth.headers()
    assert str(err.value) == f"--token-file {gone}: No such file or directory"


def test_a_token_file_back_after_a_failure_is_read_again(tmp_path: Path) -> None:
    token = tmp_path / "t"
    auth = AuthOptions.of(bearer_token_file=str(token))
    with pytest.raises(UsageError):
        auth.headers()
    _write(token, "tok-back\n")
    assert auth.headers() == {"Authorization": "Bearer tok-back"}


# --- ssl_context ---------------------------------------------------------------


def test_ssl_context_verifies_by_default(tls_files: TLSFiles) -> None:
    ctx = ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname is True
    ctx = ssl_context(str(tls_files.ca))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname is True
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "podkit test CA"),),)]
    ctx = ssl_context(str(tls_files.ca), insecure=True)
    assert ctx.verify_mode == ssl.CERT_NONE and ctx.check_hostname is False


def test_ssl_context_loads_the_client_certificate_with_its_key(tls_files: TLSFiles) -> None:
    ssl_context(cert_file=str(tls_files.client_cert), key_file=str(tls_files.client_key))
    # The key file is the one given: a key of another certificate is refused.
    with pytest.raises(ssl.SSLError):
        ssl_context(cert_file=str(tls_files.client_cert), key_file=str(tls_files.server_key))
    # Without a certificate the key is not looked at.
    ssl_context(key_file="/nonexistent/key")


# --- TLSClientOptions ----------------------------------------------------------


def test_tls_options_contexts_per_kind_of_check(tls_files: TLSFiles) -> None:
    tls = TLSClientOptions.of(ca_file=str(tls_files.ca))
    full = tls.ssl_context()
    assert full.verify_mode == ssl.CERT_REQUIRED and full.check_hostname is True
    assert tls.ssl_context() is full
    assert tls.ssl_context(True, True) is full
    chain = tls.ssl_context(check_hostname=False)
    assert chain is not full and tls.ssl_context(True, False) is chain
    assert chain.verify_mode == ssl.CERT_REQUIRED and chain.check_hostname is False
    assert [c["subject"] for c in chain.get_ca_certs()] == [((("commonName", "podkit test CA"),),)]
    none = tls.ssl_context(verify=False)
    assert none.verify_mode == ssl.CERT_NONE and none.check_hostname is False
    assert none is not full and none is not chain
    assert tls.ssl_context(False, True) is none
    assert tls.ssl_context(False, False) not in (full, chain, none)
    # The system's CAs when no file is given, still verified.
    sys_ctx = TLSClientOptions.of().ssl_context()
    assert sys_ctx.verify_mode == ssl.CERT_REQUIRED and sys_ctx.check_hostname is True


def test_tls_options_insecure_turns_off_every_context() -> None:
    tls = TLSClientOptions.of(insecure=True)
    for args in ((True, True), (True, False), (False, True)):
        ctx = tls.ssl_context(*args)
        assert ctx.verify_mode == ssl.CERT_NONE and ctx.check_hostname is False


def test_tls_options_present_the_client_certificate(tls_files: TLSFiles) -> None:
    tls = TLSClientOptions.of(
        cert_file=str(tls_files.client_cert), key_file=str(tls_files.server_key)
    )
    # The wrong key for the certificate: refused, so the key file is the one loaded.
    with pytest.raises(ssl.SSLError):
        tls.ssl_context()
    with pytest.raises(UsageError) as err:
        tls.check_files()
    assert str(err.value).startswith("--ca-file/--cert-file/--key-file: ")


def test_tls_options_key_needs_a_certificate() -> None:
    with pytest.raises(UsageError) as err:
        TLSClientOptions.of(key_file="/k")
    assert str(err.value) == "--key-file: needs --cert-file"
    with pytest.raises(UsageError) as err:
        TLSClientOptions.of({"key_file": "tls_key", "cert_file": "tls_cert"}, key_file="/k")
    assert str(err.value) == "--tls-key: needs --tls-cert"
    assert TLSClientOptions.of(cert_file="/c").cert_file == "/c"


@pytest.mark.parametrize("attr", ["ca_file", "cert_file", "key_file"])
def test_check_files_names_the_missing_file(tls_files: TLSFiles, tmp_path: Path, attr: str) -> None:
    values: dict[str, Any] = {
        "cert_file": str(tls_files.client_cert),
        "key_file": str(tls_files.client_key),
    }
    gone = str(tmp_path / "gone.pem")
    values[attr] = gone
    with pytest.raises(UsageError) as err:
        TLSClientOptions.of(**values).check_files()
    flag = "--" + attr.replace("_", "-")
    assert str(err.value) == f"{flag} {gone}: No such file or directory"


def test_check_files_names_an_unreadable_file(tmp_path: Path) -> None:
    # A directory opens with EISDIR, as an unreadable file fails to (root reads any mode).
    with pytest.raises(UsageError) as err:
        TLSClientOptions.of(ca_file=str(tmp_path)).check_files()
    assert str(err.value) == f"--ca-file {tmp_path}: Is a directory"


def test_check_files_loads_what_it_opens(tls_files: TLSFiles, tmp_path: Path) -> None:
    TLSClientOptions.of().check_files()  # the system's CAs: nothing to load
    TLSClientOptions.of(
        ca_file=str(tls_files.ca),
        cert_file=str(tls_files.client_cert),
        key_file=str(tls_files.client_key),
    ).check_files()
    bad = _write(tmp_path / "bad.pem", "not a certificate\n")
    bad_values: list[dict[str, Any]] = [{"ca_file": bad}, {"cert_file": bad}]
    for values in bad_values:
        with pytest.raises(UsageError) as err:
            TLSClientOptions.of(**values).check_files()
        assert str(err.value).startswith("--ca-file/--cert-file/--key-file: ")
    with pytest.raises(UsageError) as err:
        TLSClientOptions.of({"ca_file": "up_ca"}, ca_file=bad).check_files()
    assert str(err.value).startswith("--up-ca/--cert-file/--key-file: ")


def test_cert_signature_follows_the_certificate_and_key_files(
    tls_files: TLSFiles, tmp_path: Path
) -> None:
    assert TLSClientOptions.of().cert_signature() == ()
    assert TLSClientOptions.of(ca_file=str(tls_files.ca)).cert_signature() == ()
    cert = tmp_path / "c.pem"
    key = tmp_path / "k.pem"
    cert.write_bytes(tls_files.client_cert.read_bytes())
    key.write_bytes(tls_files.client_key.read_bytes())
    both = TLSClientOptions.of(cert_file=str(cert), key_file=str(key))
    sig = both.cert_signature()
    c, k = os.stat(cert), os.stat(key)
    assert sig == (
        (c.st_dev, c.st_ino, c.st_size, c.st_mtime_ns),
        (k.st_dev, k.st_ino, k.st_size, k.st_mtime_ns),
    )
    one = TLSClientOptions.of(cert_file=str(cert))
    assert one.cert_signature() == sig[:1]
    os.utime(key, ns=(10**9, 10**9))
    assert both.cert_signature() != sig and both.cert_signature()[0] == sig[0]
    assert one.cert_signature() == sig[:1]
    os.utime(cert, ns=(10**9, 10**9))
    assert one.cert_signature() != sig[:1]
    key.unlink()
    with pytest.raises(FileNotFoundError):
        both.cert_signature()


def test_check_names_the_callers_header_file_flag() -> None:
    with pytest.raises(UsageError) as err:
        AuthOptions.of({"header_file": "api_header"}, header_file=["X-K=/a", "X-K=/b"])
    assert str(err.value) == "--api-header: X-K is set twice"


def test_a_header_file_path_with_a_colon_is_named_whole(tmp_path: Path) -> None:
    gone = str(tmp_path / "a:b" / "key")
    auth = AuthOptions.of(header_file=[f"X-K={gone}"])
    with pytest.raises(UsageError) as err:
        auth.headers()
    assert str(err.value) == f"--header-file {gone}: No such file or directory"


@pytest.mark.parametrize("text", ["tok-a\ntok-b\n", "tok-a\r\nX-Evil: 1\n", "tok-a\rtok-b"])
def test_headers_refuse_a_bearer_token_of_more_than_one_line(tmp_path: Path, text: str) -> None:
    """As a header file of two lines is: the token goes into a header line,
    and aiohttp's own refusal (a ValueError at send time) names no file."""
    path = tmp_path / "token"
    path.write_bytes(text.encode())
    auth = AuthOptions.of({"bearer_token_file": "token_file"}, bearer_token_file=str(path))
    with pytest.raises(UsageError) as err:
        auth.headers()
    assert str(err.value) == f"--token-file {path}: one line expected"
    assert "tok-a" not in str(err.value)


@pytest.mark.parametrize("text", ["", "\n", "  \n"])
def test_headers_refuse_an_empty_bearer_token(tmp_path: Path, text: str) -> None:
    """An empty token file (a Secret not projected yet) is a failure that names the
    file, not a request sent with `Authorization: Bearer `."""
    path = tmp_path / "token"
    path.write_text(text)
    auth = AuthOptions.of({"bearer_token_file": "token_file"}, bearer_token_file=str(path))
    with pytest.raises(UsageError) as err:
        auth.headers()
    assert str(err.value) == f"--token-file {path}: empty"
    path.write_text("tok-now\n")
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    assert auth.headers() == {"Authorization": "Bearer tok-now"}
