"""git-sync's spellings, parsed the way git-sync parses them (no git, no network)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from podkit.sidecars.gitsync import GitSync, auth
from podkit.sidecars.gitsync.auth import parse_git_config
from podkit.sidecars.gitsync.compat import unknown_env
from podkit.sidecars.gitsync.program import add_user
from podkit.sidecars.gitsync.publish import write_atomic

from podkit import UsageError
from podkit.runner import configure
from tests.unit.test_gitsync import askpass


def make(*args: str, env: dict[str, str] | None = None) -> GitSync:
    prog = configure(GitSync, list(args), env or {})
    assert isinstance(prog, GitSync)
    return prog


def test_v3_flags_map_as_git_sync_maps_them(tmp_path: Path) -> None:
    p = make(
        "--repo", "https://h/x", "--root", str(tmp_path), "--branch", "rel", "--dest", "cur",
        "--wait", "2.5", "--timeout", "30", "--max-sync-failures", "4",
        "--sync-hook-command", "true", "--v", "2",
    )  # fmt: skip
    assert (p.ref, p.link, p.period, p.sync_timeout) == ("rel", "cur", 2.5, 30.0)
    assert (p.max_failures, p.exechook_command, p.verbose) == (4, "true", 2)
    assert p.log_level == "debug"
    assert len(p._warnings) == 7
    assert make("--repo", "https://h/x", "--root", "r", "--rev", "v1").ref == "v1"
    with pytest.raises(UsageError, match="--branch and --rev"):
        make("--repo", "https://h/x", "--root", "r", "--branch", "a", "--rev", "b")


def test_v3_and_v4_env_names(tmp_path: Path) -> None:
    env = {
        "GIT_SYNC_REPO": "https://h/org/conf.git",
        "GIT_SYNC_ROOT": str(tmp_path),
        "GIT_SYNC_DEST": "current",
        "GIT_SYNC_WAIT": "3",
        "GITSYNC_PERIOD": "10s",
        "GITSYNC_PASSWORD": "tok",
        "GITSYNC_SSH_KEY_FILE": "",
        "GITSYNC_VERBOSE": "5",
    }
    p = make(env=env)
    assert p.repo == "https://h/org/conf.git" and p.link == "current"
    assert p.period == 3  # as in git-sync: --wait overrides --period
    assert p.password == "tok" and p.verbose == 5


def test_unknown_git_sync_variables_are_named() -> None:
    known = {o2 for o in GitSync.options() for o2 in (o.env_name, *o.also_env)}
    env = {"GITSYNC_REPO": "x", "GITSYNC_BRANCH": "main", "GIT_SYNC_FOO": "1", "HOME": "/"}
    assert unknown_env(env, known) == ["GITSYNC_BRANCH", "GIT_SYNC_FOO"]


@pytest.mark.parametrize(
    ("link", "ok"),
    [
        ("cur", True),
        ("a/b/cur", True),
        ("/elsewhere/cur", True),
        ("../escape", False),
        (".", False),
        (".git", False),
        (".worktrees/x", False),
    ],
)
def test_link_anywhere_but_over_the_repository(tmp_path: Path, link: str, ok: bool) -> None:
    args = ["--repo", "https://h/x", "--root", str(tmp_path / "root"), "--link", link]
    if ok:
        assert make(*args).link == link
    else:
        with pytest.raises(UsageError, match="--link"):
            make(*args)
    with pytest.raises(UsageError, match="--link"):
        make("--repo", "https://h/x", "--root", str(tmp_path / "root"), "--link", str(tmp_path))


def test_git_secret_defaults_apply_to_ssh_repos_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, kh = tmp_path / "ssh", tmp_path / "known_hosts"
    monkeypatch.setattr(auth, "DEFAULT_SSH_KEY", str(key))
    monkeypatch.setattr(auth, "DEFAULT_KNOWN_HOSTS", str(kh))
    ssh = ["--repo", "git@h:org/x.git", "--root", str(tmp_path / "r")]
    p = make(*ssh)
    assert p.ssh_key_file == [] and p.ssh_known_hosts_file is None
    key.write_text("k")
    kh.write_text("h")
    p = make(*ssh)
    assert p.ssh_key_file == [str(key)] and p.ssh_known_hosts_file == str(kh)
    assert make(*ssh, "--ssh-known-hosts=false").ssh_known_hosts_file is None
    # Not for an https repo, and never over what the spec names.
    assert make("--repo", "https://h/x", "--root", "r").ssh_key_file == []
    other = tmp_path / "other"
    other.write_text("o")
    assert make(*ssh, "--ssh-key-file", str(other)).ssh_key_file == [str(other)]


def test_every_ssh_key_is_offered(tmp_path: Path) -> None:
    keys = [tmp_path / "a", tmp_path / "b"]
    for k in keys:
        k.write_text("k")
        k.chmod(0o600)
    a = auth.Auth("ssh://h/x", ssh_key_files=[str(k) for k in keys])
    a.setup()
    try:
        cmd = a.env()["GIT_SSH_COMMAND"]
        assert f"-i {keys[0]} -i {keys[1]} -o IdentitiesOnly=yes" in cmd
    finally:
        a.cleanup()


def test_a_password_value_reaches_git_through_a_file_only(tmp_path: Path) -> None:
    a = auth.Auth("https://h/x", username="u", password="pw-value-123")
    a.setup()
    try:
        env = a.env()
        assert "pw-value-123" not in repr(env)
        assert Path(env["PODKIT_GITSYNC_ASKPASS_FILE"]).read_text() == "pw-value-123\n"
    finally:
        a.cleanup()
    with pytest.raises(UsageError, match="--password"):
        make("--repo", "https://h/x", "--root", "r", "--password", "x", "--password-file", "/")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", []),
        ("http.sslVerify:false", [("http.sslVerify", "false")]),
        ("a.b:1,c.d:2", [("a.b", "1"), ("c.d", "2")]),
        ('"http.https://h/.proxy":"http://p:3128"', [("http.https://h/.proxy", "http://p:3128")]),
        ('a.b:"x,y\\"z"', [("a.b", 'x,y"z')]),
        ("a.b:", [("a.b", "")]),
    ],
)
def test_git_config_syntax(text: str, want: list[tuple[str, str]]) -> None:
    assert parse_git_config(text, "--git-config") == want


@pytest.mark.parametrize("text", ["novalue", '"open:x', 'a.b:"x"y', ":v"])
def test_git_config_errors_name_the_flag(text: str) -> None:
    with pytest.raises(UsageError, match="--git-config"):
        parse_git_config(text, "--git-config")


@pytest.mark.parametrize(
    ("sig", "want"),
    [
        ("SIGHUP", (signal.SIGHUP,)),
        ("HUP", (signal.SIGHUP,)),
        ("1", (signal.SIGHUP,)),
        ("USR1", (signal.SIGHUP, signal.SIGUSR1)),
        ("sigusr2", (signal.SIGHUP, signal.SIGUSR2)),
        (str(int(signal.SIGUSR1)), (signal.SIGHUP, signal.SIGUSR1)),
        ("TERM", "stops the program"),
        ("2", "stops the program"),
        ("KILL", "stops the program"),
        ("NOPE", "not a signal"),
        ("999", "not a signal"),
    ],
)
def test_sync_on_signal_any_name_or_number(sig: str, want: tuple[int, ...] | str) -> None:
    """git-sync takes any signal by name or number; those that stop us are refused."""
    args = ["--repo", "https://h/x", "--root", "r", "--sync-on-signal", sig]
    if isinstance(want, str):
        with pytest.raises(UsageError, match=f"--sync-on-signal: .*{want}"):
            make(*args)
    else:
        assert make(*args).sighup_signals() == want


def test_http_bind_and_metrics(tmp_path: Path) -> None:
    assert make("--repo", "x", "--root", "r", "--http-bind", ":1234").http_bind == ":1234"
    with pytest.raises(UsageError, match="--http-metrics"):
        make("--repo", "x", "--root", "r", "--http-metrics")
    with pytest.raises(UsageError, match="--http-bind"):
        make("--repo", "x", "--root", "r", "--http-bind", "nope")


def test_add_user_appends_only_a_missing_uid(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\n")
    if os.getuid() == 0:
        assert add_user(str(passwd)) is False
        passwd.write_text("nobody:x:65534:65534::/:/bin/false\n")
    assert add_user(str(passwd)) is True
    assert passwd.read_text().splitlines()[-1].startswith(f"git-sync:x:{os.getuid()}:")
    assert add_user(str(passwd)) is False


def test_write_atomic_under_rlimit_fsize_keeps_the_old_file(tmp_path: Path) -> None:
    """RLIMIT_FSIZE in a child: the write fails half-way; the old content stays whole."""
    target = tmp_path / "error.json"
    target.write_text('{"old": true}\n')
    code = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
from podkit.sidecars.gitsync.publish import write_atomic
try:
    write_atomic({str(target)!r}, b"x" * 5000)
except OSError as exc:
    print("failed", exc.errno)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("failed"), out
    assert target.read_text() == '{"old": true}\n'
    assert os.listdir(tmp_path) == ["error.json"]
    write_atomic(str(target), b"new\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["error.json"]
    assert resource.getrlimit(resource.RLIMIT_FSIZE)  # the limit stayed in the child


def test_cookie_file_is_git_syncs_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cookie = tmp_path / "cookie_file"
    monkeypatch.setattr(auth, "DEFAULT_COOKIE_FILE", str(cookie))
    args = ["--repo", "https://h/x", "--root", "r", "--cookie-file"]
    with pytest.raises(UsageError, match="--cookie-file"):
        make(*args)
    cookie.write_text("# Netscape HTTP Cookie File\n")
    p = make(*args, "--git-config", "http.cookieFile:/mine")
    # The user's --git-config comes after, so it wins.
    assert p._git_config == [("http.cookieFile", str(cookie)), ("http.cookieFile", "/mine")]


def test_credentials_as_git_sync_takes_them(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x")
    one = '{"url": "https://h/a.git", "username": "u", "password": "p"}'
    many = f'[{one}, {{"url": "https://h/b", "username": "v", "password-file": "{pw}"}}]'
    creds = auth.parse_credentials([one, many])
    assert [(c.url, c.username, c.password, c.password_file) for c in creds] == [
        ("https://h/a.git", "u", "p", None),
        ("https://h/a.git", "u", "p", None),
        ("https://h/b", "v", None, str(pw)),
    ]
    for bad in (
        "nope",
        '{"url": "https://h", "username": "u"}',
        '{"url": "https://h", "username": "u", "password": "p", "password-file": "/x"}',
        '{"username": "u", "password": "p"}',
        '{"url": "https://h", "username": "u", "password": "p", "extra": 1}',
    ):
        with pytest.raises(UsageError, match="--credential"):
            auth.parse_credentials([bad])
    # $GITSYNC_CREDENTIAL is a JSON list, read whole (commas and all).
    p = make("--repo", "https://h/x", "--root", "r", env={"GITSYNC_CREDENTIAL": many})
    assert len(p._credentials) == 2 and ("credential.useHttpPath", "true") in p._git_config
    assert auth.strip_user("https://bob@h:1/x.git") == "https://h:1/x.git"


def test_askpass_picks_the_longest_matching_credential(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("pw-a\n")
    (tmp_path / "b").write_text("pw-b\n")
    table = tmp_path / "table"
    table.write_text(
        f"http://h:1/\tcarol\t{tmp_path / 'a'}\nhttp://h:1/lib.git\tbob\t{tmp_path / 'b'}\n"
    )
    ask = askpass(
        tmp_path,
        USER="alice",
        FILE=str(tmp_path / "a"),
        PODKIT_GITSYNC_CREDENTIALS=str(table),
    )

    assert ask("Username for 'http://h:1/lib.git': ") == "bob\n"
    assert ask("Password for 'http://bob@h:1/lib.git': ") == "pw-b\n"
    assert ask("Username for 'http://h:1/app.git': ") == "carol\n"
    assert ask("Username for 'http://other/app.git': ") == "alice\n"


def test_credential_passwords_are_not_in_the_settings_logged_at_start() -> None:
    from podkit.runner import public_settings

    cred = '{"url": "https://h/x", "username": "u", "password": "t0p-s3cret"}'
    p = make(
        "--repo", "https://h/x", "--root", "r", "--credential", cred, "--password", "pw-flag",
        env={"GITSYNC_CREDENTIAL": f"[{cred}]"},
    )  # fmt: skip
    shown = repr(public_settings(p))
    assert "t0p-s3cret" not in shown and "pw-flag" not in shown


def test_github_app_flags_follow_git_syncs_rules(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("x")
    base = ["--repo", "https://github.com/o/r", "--root", "r"]
    app = ["--github-app-private-key-file", str(key), "--github-app-installation-id", "42"]
    p = make(*base, *app, "--github-app-application-id", "7")
    gh = p._github_app()
    assert gh is not None and (gh.issuer, gh.installation_id) == ("7", "42")
    assert make(*base, *app, "--github-app-client-id", "Iv1.x")._github_app() is not None
    assert make(*base)._github_app() is None
    for extra, needle in (
        (["--github-app-application-id", "7", "--github-app-client-id", "c"], "one only"),
        (["--github-app-application-id", "7", "--username", "u"], "--username"),
        ([], "needs --github-app-application-id"),
    ):
        with pytest.raises(UsageError, match=needle):
            make(*base, *app, *extra)
    with pytest.raises(UsageError, match="--github-app-installation-id"):
        make(*base, "--github-app-private-key-file", str(key), "--github-app-client-id", "c")


def _words(text: str) -> list[str]:
    return text.split()


#: Every flag of git-sync v4.7.1 (its main.go's pflag declarations), and every
#: environment variable it reads: a spec written for it must never meet an
#: unknown flag, nor have a variable silently ignored.
GIT_SYNC_V47_FLAGS = _words("""
    add-user askpass-url branch change-permissions cookie-file depth dest error-file
    exechook-backoff exechook-command exechook-timeout filter git git-config git-gc
    github-app-application-id github-app-client-id github-app-installation-id
    github-app-private-key-file github-base-url group-write help http-bind http-metrics
    http-pprof init-max-failures init-period link man max-failures max-sync-failures
    one-time password password-file period ref repo rev root sparse-checkout-file ssh
    ssh-key-file ssh-known-hosts ssh-known-hosts-file stale-worktree-timeout submodules
    sync-hook-command sync-on-signal sync-timeout timeout touch-file username v verbose
    version webhook-backoff webhook-method webhook-success-status webhook-timeout
    webhook-url
""")
GIT_SYNC_V47_ENV = _words("""
    GITSYNC_ADD_USER GITSYNC_ASKPASS_URL GITSYNC_COOKIE_FILE GITSYNC_CREDENTIAL
    GITSYNC_DEPTH GITSYNC_ERROR_FILE GITSYNC_EXECHOOK_BACKOFF GITSYNC_EXECHOOK_COMMAND
    GITSYNC_EXECHOOK_TIMEOUT GITSYNC_FILTER GITSYNC_GIT
    GITSYNC_GITHUB_APP_APPLICATION_ID GITSYNC_GITHUB_APP_CLIENT_ID
    GITSYNC_GITHUB_APP_INSTALLATION_ID GITSYNC_GITHUB_APP_PRIVATE_KEY
    GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE GITSYNC_GITHUB_BASE_URL GITSYNC_GIT_CONFIG
    GITSYNC_GIT_GC GITSYNC_GROUP_WRITE GITSYNC_HTTP_BIND GITSYNC_HTTP_METRICS
    GITSYNC_HTTP_PPROF GITSYNC_INIT_MAX_FAILURES GITSYNC_INIT_PERIOD GITSYNC_LINK
    GITSYNC_MAX_FAILURES GITSYNC_ONE_TIME GITSYNC_PASSWORD GITSYNC_PASSWORD_FILE
    GITSYNC_PERIOD GITSYNC_REF GITSYNC_REPO GITSYNC_ROOT GITSYNC_SPARSE_CHECKOUT_FILE
    GITSYNC_SSH_KEY_FILE GITSYNC_SSH_KNOWN_HOSTS GITSYNC_SSH_KNOWN_HOSTS_FILE
    GITSYNC_STALE_WORKTREE_TIMEOUT GITSYNC_SUBMODULES GITSYNC_SYNC_ON_SIGNAL
    GITSYNC_SYNC_TIMEOUT GITSYNC_TOUCH_FILE GITSYNC_USERNAME GITSYNC_VERBOSE
    GITSYNC_WEBHOOK_BACKOFF GITSYNC_WEBHOOK_METHOD GITSYNC_WEBHOOK_SUCCESS_STATUS
    GITSYNC_WEBHOOK_TIMEOUT GITSYNC_WEBHOOK_URL GIT_ASKPASS_URL GIT_COOKIE_FILE
    GIT_KNOWN_HOSTS GIT_SSH_KEY_FILE GIT_SSH_KNOWN_HOSTS_FILE GIT_SYNC_ADD_USER
    GIT_SYNC_ASKPASS_URL GIT_SYNC_BRANCH GIT_SYNC_COOKIE_FILE GIT_SYNC_DEPTH
    GIT_SYNC_DEST GIT_SYNC_ERROR_FILE GIT_SYNC_EXECHOOK_BACKOFF
    GIT_SYNC_EXECHOOK_COMMAND GIT_SYNC_EXECHOOK_TIMEOUT GIT_SYNC_GIT GIT_SYNC_GIT_CONFIG
    GIT_SYNC_GIT_GC GIT_SYNC_GROUP_WRITE GIT_SYNC_HOOK_COMMAND GIT_SYNC_HTTP_BIND
    GIT_SYNC_HTTP_METRICS GIT_SYNC_HTTP_PPROF GIT_SYNC_KNOWN_HOSTS GIT_SYNC_LINK
    GIT_SYNC_MAX_FAILURES GIT_SYNC_MAX_SYNC_FAILURES GIT_SYNC_ONE_TIME GIT_SYNC_PASSWORD
    GIT_SYNC_PASSWORD_FILE GIT_SYNC_PERIOD GIT_SYNC_PERMISSIONS GIT_SYNC_REPO
    GIT_SYNC_REV GIT_SYNC_ROOT GIT_SYNC_SPARSE_CHECKOUT_FILE GIT_SYNC_SSH_KEY_FILE
    GIT_SYNC_SSH_KNOWN_HOSTS_FILE GIT_SYNC_SUBMODULES GIT_SYNC_SYNC_ON_SIGNAL
    GIT_SYNC_SYNC_TIMEOUT GIT_SYNC_TIMEOUT GIT_SYNC_TOUCH_FILE GIT_SYNC_USERNAME
    GIT_SYNC_WAIT GIT_SYNC_WEBHOOK_BACKOFF GIT_SYNC_WEBHOOK_METHOD
    GIT_SYNC_WEBHOOK_SUCCESS_STATUS GIT_SYNC_WEBHOOK_TIMEOUT GIT_SYNC_WEBHOOK_URL
""")


def test_every_git_sync_v47_flag_is_accepted_or_refused_by_name(tmp_path: Path) -> None:
    from podkit.sidecars.gitsync.compat import LEFT_OUT

    by_flag = {o.flag_name: o for o in GitSync.options()}
    by_flag.update({o.short: o for o in GitSync.options() if o.short})
    left_out = {"--" + n.replace("_", "-") for n in LEFT_OUT}
    for name in GIT_SYNC_V47_FLAGS:
        flag = "--" + name
        if name in ("help", "version"):
            continue  # the parser's own
        assert flag in by_flag, f"git-sync's {flag} is not parsed"
        if flag in left_out:
            # Named in the one-line error, never silently ignored.
            o = by_flag[flag]
            value = "true" if o.resolve_kind() == "bool" else "1"
            with pytest.raises(UsageError, match=f"{flag}: not supported"):
                make("--repo", "https://h/x", "--root", str(tmp_path), f"{flag}={value}")


def test_every_git_sync_v47_variable_is_read() -> None:
    read = set()
    for o in GitSync.options():
        read.add(o.env_name)
        read.update(o.also_env)
    assert [n for n in GIT_SYNC_V47_ENV if n not in read] == []
