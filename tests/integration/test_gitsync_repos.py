"""Several repositories in one gitsync (`repos:` in --config): each with its own
link, ref, credentials and hooks; one failing never stops the others."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import yaml

from tests.helpers import run_program, wait_until
from tests.integration.test_gitsync import gitsync, metric, polled, wait_published
from tests.peers.git import GitDaemon, GitHttp, GitRepos


def test_two_repos_one_failing(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon, git_http: GitHttp
) -> None:
    dags = git_repos.create("dags", {"dag.py": "1"})
    conf = git_repos.create("conf", {"c": "main"})
    conf.commit({"c": "release"})
    conf.push(ref="HEAD:refs/heads/release")
    assert git_http.user and git_http.password
    pwfile = tmp_path / "pw"
    pwfile.write_text("wrong\n")
    hooked = tmp_path / "hooked"
    root = tmp_path / "git"
    config = tmp_path / "gitsync.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "period": "200ms",
                "repos": [
                    {
                        "repo": git_daemon.url("dags"),
                        "exechook-command": f"sh -c 'echo $GITSYNC_HASH >> {hooked}'",
                    },
                    {
                        "name": "settings",
                        "repo": git_http.url("conf"),
                        "ref": "release",
                        "username": git_http.user,
                        "password-file": str(pwfile),  # wrong at first: this one fails
                        "period": "100ms",
                    },
                ],
            }
        )
    )
    with gitsync(tmp_path, "--root", str(root), "--config", str(config)) as p:
        wait_published(root / "dags", dags.head())
        wait_until(
            lambda: polled(p, "podkit_gitsync_syncs_total", repo="settings", result="error") >= 3,
            20,
        )
        # Not ready until every repository has synced once; the good one goes on.
        assert p.get("/readyz")[0] == 503
        sha2 = dags.commit_push({"dag.py": "2"})
        wait_published(root / "dags", sha2, 10)
        wait_until(lambda: hooked.exists() and sha2 in hooked.read_text(), 10, what="dags hook")
        st = json.loads(p.get("/")[2])["repos"]
        assert st["dags"]["published"] == sha2 and st["dags"]["last_error"] is None
        assert st["settings"]["published"] is None and st["settings"]["consecutive_failures"] >= 3
        assert metric(p, "podkit_gitsync_syncs_total", repo="dags", result="success") >= 2
        assert metric(p, "podkit_gitsync_fetches_total", repo="settings") >= 1
        # Its own credentials, re-read: the failing one recovers; now ready.
        pwfile.write_text(git_http.password + "\n")
        wait_published(root / "settings", conf.head(), 20)
        assert (root / "settings" / "c").read_text() == "release"
        p.wait_ready()
        assert (root / ".repos" / "dags" / ".git").is_dir()
        # The dags hook never ran for the other repository's commit.
        assert conf.head() not in hooked.read_text()
        # A push webhook per repository: ?repo= syncs that one only.
        assert p.get("/sync?repo=nope", method="POST", data=b"")[0] == 404
        fetches = metric(p, "podkit_gitsync_fetches_total", repo="settings")
        sha3 = dags.commit_push({"dag.py": "3"})
        code, _, body = p.get("/sync?repo=dags", method="POST", data=b"")
        assert code == 202 and json.loads(body)["published"]["dags"] == sha2
        wait_published(root / "dags", sha3, 10)
        syncs = json.loads(p.get("/")[2])["repos"]["settings"]["syncs"]
        wait_until(lambda: json.loads(p.get("/")[2])["repos"]["settings"]["syncs"] > syncs + 1, 10)
        assert metric(p, "podkit_gitsync_fetches_total", repo="settings") == fetches
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0


def test_repos_config_errors_name_the_entry(tmp_path: Path) -> None:
    for repos, says in (
        ([], "repos: expected a non-empty list"),
        ([{"ref": "main"}], "repos[0]: repo is required"),
        ([{"repo": "/a", "admin-addr": "x"}], "repos[0]: 'admin-addr' is the container's"),
        ([{"repo": "/a", "nope": 1}], "repos[0]: unknown setting 'nope'"),
        ([{"repo": "/a"}, {"repo": "/b/a"}], "repos[1]: name 'a' is used twice"),
        ([{"repo": "/a", "depth": -1}], "repos[0].depth: -1 is below the minimum 0"),
    ):
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"repos": repos}))
        p = run_program(
            "gitsync", ["--root", str(tmp_path), "--config", str(config), "--admin-addr", "off"]
        )
        lines = p.stderr.decode().strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and says in lines[0], (repos, lines)
