"""Verified publishing: only commits (or tags) signed by a trusted key are published.

Commits are signed in the test, with ssh-keygen (git's gpg.format=ssh) and
with gpg (a key batch-generated in a temporary GNUPGHOME).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import need, run_program, wait_until
from tests.integration.test_gitsync import (
    gitsync,
    metric,
    polled,
    published,
    status,
    sync_once,
    wait_published,
)
from tests.peers.git import GitRepos, Upstream, git


def _keygen(path: Path) -> Path:
    need("ssh-keygen")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


def _tamper(up: Upstream, sha: str) -> str:
    """A copy of signed commit `sha` with its message changed: the signature no longer fits."""
    text = git("cat-file", "commit", sha, cwd=up.bare) + "\n"
    forged = text.replace("\n\ngood", "\n\nevil", 1)
    assert forged != text
    p = subprocess.run(
        ["git", "hash-object", "-t", "commit", "-w", "--stdin"],
        input=forged.encode(),
        cwd=up.bare,
        capture_output=True,
        check=True,
    )
    return p.stdout.decode().strip()


def _args(up: Upstream, root: Path) -> list[str]:
    return ["--repo", str(up.bare), "--root", str(root), "--period", "1h", "--verify-signatures"]


def _check_refusals(
    tmp_path: Path, up: Upstream, trust: list[str], sign_with: dict[str, list[str]]
) -> None:
    """good publishes; unsigned, unknown key and tampered are refused, the good tree stays."""
    root = tmp_path / "root"
    link = root / "app"

    def commit(how: str, files: dict[str, str | None], message: str) -> str:
        for args in sign_with[how]:
            git("config", *args, cwd=up.work)
        return up.commit_push(files, message)

    good = commit("good", {"v": "good"}, "good")
    with gitsync(tmp_path, *_args(up, root), *trust) as p:
        p.wait_ready()
        wait_published(link, good)
        assert metric(p, "podkit_gitsync_signature_checks_total", result="good") == 1
        assert status(p)["refused"] is None

        for how, reason in (
            ("unsigned", "unsigned"),
            ("unknown", "signed by a key not in"),
        ):
            sha = commit(how, {"v": how}, how)
            st = sync_once(p)
            assert published(link) == good and (link / "v").read_text() == "good"
            refused = st["refused"]
            assert isinstance(refused, dict)
            assert refused["commit"] == sha and reason in refused["reason"], refused
            assert st["published"] == good and "not published" in str(st["last_error"])
            assert not (root / ".worktrees" / sha).exists()  # never even checked out
        forged = _tamper(up, good)
        up.set_main(forged)
        st = sync_once(p)
        assert published(link) == good
        assert st["refused"] == {
            "commit": forged,
            "reason": "bad signature (the signed content was changed)",
        }
        assert metric(p, "podkit_gitsync_signature_checks_total", result="refused") == 3
        assert p.get("/readyz")[0] == 200  # the last good tree is still served

        up.reset_hard(good)
        up.push(force=True)
        good2 = commit("good", {"v": "good2"}, "good again")
        st = sync_once(p)
        assert published(link) == good2 and (link / "v").read_text() == "good2"
        assert st["refused"] is None and st["last_error"] is None
        assert metric(p, "podkit_gitsync_signature_checks_total", result="good") == 2


def test_ssh_signatures(tmp_path: Path, git_repos: GitRepos) -> None:
    key = _keygen(tmp_path / "signer")
    other = _keygen(tmp_path / "stranger")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"t@example.invalid {(tmp_path / 'signer.pub').read_text()}")
    up = git_repos.create("app", {"v": "0"})
    git("config", "gpg.format", "ssh", cwd=up.work)
    _check_refusals(
        tmp_path,
        up,
        ["--allowed-signers-file", str(allowed)],
        {
            "good": [["commit.gpgSign", "true"], ["user.signingKey", str(key)]],
            "unsigned": [["commit.gpgSign", "false"]],
            "unknown": [["commit.gpgSign", "true"], ["user.signingKey", str(other)]],
        },
    )


def test_ssh_signed_tag(tmp_path: Path, git_repos: GitRepos) -> None:
    """--verify-tag: the annotated tag's signature decides, not the commit's."""
    key = _keygen(tmp_path / "signer")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"t@example.invalid {(tmp_path / 'signer.pub').read_text()}")
    up = git_repos.create("app", {"v": "1"})
    git("config", "gpg.format", "ssh", cwd=up.work)
    git("config", "user.signingKey", str(key), cwd=up.work)
    git("tag", "-s", "-m", "signed", "v1", cwd=up.work)
    git("tag", "-a", "-m", "unsigned", "v2", cwd=up.work)
    git("push", "-q", "origin", "v1", "v2", cwd=up.work)
    for ref, code in (("v1", 0), ("v2", 1)):
        root = tmp_path / f"root-{ref}"
        p = run_program(
            "gitsync",
            [
                *_args(up, root),
                "--ref",
                ref,
                "--verify-tag",
                "--one-time",
                "--allowed-signers-file",
                str(allowed),
                "--admin-addr",
                "off",
            ],
            timeout=60,
        )
        assert p.returncode == code, p.stderr.decode()
        assert (published(root / "app") == up.head()) == (code == 0)
        if code:
            assert b"no signature found" in p.stderr or b"unsigned" in p.stderr


@pytest.fixture
def gpg_home(tmp_path: Path) -> Iterator[Path]:
    """A throwaway GNUPGHOME for signing; its agent is stopped afterwards."""
    need("gpg")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    try:
        yield home
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True
        )


def _gpg_key(home: Path, uid: str) -> str:
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys", uid],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def test_gpg_signatures(
    tmp_path: Path, git_repos: GitRepos, gpg_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GNUPGHOME", str(gpg_home))  # for the test's own `git commit -S`
    trusted = _gpg_key(gpg_home, "Signer <t@example.invalid>")
    stranger = _gpg_key(gpg_home, "Stranger <s@example.invalid>")
    keyring = tmp_path / "trusted.asc"
    keyring.write_bytes(
        subprocess.run(
            ["gpg", "--batch", "--armor", "--export", trusted], check=True, capture_output=True
        ).stdout
    )
    up = git_repos.create("app", {"v": "0"})
    _check_refusals(
        tmp_path,
        up,
        # gitsync must not read the signer's GNUPGHOME (where both keys are).
        ["--gpg-keyring-file", str(keyring)],
        {
            "good": [["commit.gpgSign", "true"], ["user.signingKey", trusted]],
            "unsigned": [["commit.gpgSign", "false"]],
            "unknown": [["commit.gpgSign", "true"], ["user.signingKey", stranger]],
        },
    )


def test_verify_flags_need_each_other(tmp_path: Path) -> None:
    signers = tmp_path / "allowed"
    signers.write_text("")
    for args, says in (
        (["--verify-signatures"], "needs --allowed-signers-file or --gpg-keyring-file"),
        (["--allowed-signers-file", str(signers)], "needs --verify-signatures"),
        (["--verify-tag"], "needs --verify-signatures"),
    ):
        p = run_program(
            "gitsync", ["--repo", "/x", "--root", str(tmp_path), "--admin-addr", "off", *args]
        )
        assert p.returncode == 2 and says in p.stderr.decode(), p.stderr


def test_a_refused_commit_is_not_fetched_again_while_the_remote_names_it(
    tmp_path: Path, git_repos: GitRepos
) -> None:
    key = _keygen(tmp_path / "signer")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"t@example.invalid {(tmp_path / 'signer.pub').read_text()}")
    up = git_repos.create("app", {"v": "0"})
    for args in (["gpg.format", "ssh"], ["user.signingKey", str(key)], ["commit.gpgSign", "true"]):
        git("config", *args, cwd=up.work)
    good = up.commit_push({"v": "good"}, "good")
    root = tmp_path / "root"
    args = ["--repo", str(up.bare), "--root", str(root), "--period", "100ms"]
    args += ["--verify-signatures", "--allowed-signers-file", str(allowed)]
    with gitsync(tmp_path, *args) as p:
        p.wait_ready()
        wait_published(root / "app", good)
        git("config", "commit.gpgSign", "false", cwd=up.work)
        bad = up.commit_push({"v": "unsigned"}, "unsigned")
        refused = "podkit_gitsync_signature_checks_total"
        wait_until(lambda: polled(p, refused, result="refused") >= 1, 10, what="refused")
        fetches = metric(p, "podkit_gitsync_fetches_total")
        wait_until(lambda: polled(p, refused, result="refused") >= 4, 10, what="refused again")
        assert metric(p, "podkit_gitsync_fetches_total") == fetches  # ls-remote only
        assert status(p)["refused"]["commit"] == bad and published(root / "app") == good
        # A new commit on the remote is fetched (and, signed, published) at once.
        git("config", "commit.gpgSign", "true", cwd=up.work)
        good2 = up.commit_push({"v": "good2"}, "good2")
        wait_published(root / "app", good2, 10)
        # The status follows the link flip by the cleanup's few ms.
        wait_until(lambda: status(p)["refused"] is None, 10, what="refusal cleared")
