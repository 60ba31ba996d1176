#!/usr/bin/env python3
"""Print docs/images.md's tables: each image's size (as `podman image inspect`
gives it, and compressed as a registry would carry it), each program's resident
memory, idle, inside its own container, and each image's ten largest paths.

    images/measure.py [--tag TAG]

Run after images/build.sh, as root on Linux (it reads the program's RSS from
the host's /proc: the container's PID 1 is tini, the program is its child).
Each container runs as the image's user with a read-only root filesystem, no
network and /tmp as tmpfs, with arguments that leave it idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONF = str(HERE / "containers.conf")

IDLE_ARGS = {
    "waitfor": ["tcp://127.0.0.1:9", "--timeout=0"],  # waiting for a target that never answers
    "logship": ["--path=/tmp/*.log", "--sink=stdout://", "--state-dir=/tmp/state"],
    "gitsync": ["--repo=file:///repo.git", "--root=/tmp/git", "--period=10s"],
    "reloader": ["--watch=/tmp", "--command=true"],
    "metrics": ["--statsd-udp=127.0.0.1:9125"],
    "logformat": ["--path=/tmp/*.log", "--format=nginx", "--state-dir=/tmp/state"],
    "proxy": ["--listen=127.0.0.1:8080", "--upstream=http://127.0.0.1:9"],
}

# Sized and listed too; their idle RSS needs a peer (see docs/images.md).
ALL = [*IDLE_ARGS, "kubefiles", "injector", "base"]


def podman(*args: str) -> str:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", CONF)}
    return subprocess.run(
        ["podman", *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def size(image: str) -> int:
    return int(json.loads(podman("image", "inspect", image))[0]["Size"])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_rss(image: str, program: str, repo: str) -> tuple[float, float]:
    """(program MiB, tini MiB) after 5 s idle."""
    name = f"podkit-measure-{program}"
    podman("rm", "--force", name)
    extra = ["-v", f"{repo}:/repo.git:ro"] if program == "gitsync" else []
    podman(
        "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp:mode=1777",
        "--network", "none", *extra, image, *IDLE_ARGS[program],
    )  # fmt: skip
    try:
        time.sleep(5)
        state = json.loads(podman("inspect", name))[0]["State"]
        if not state["Running"]:
            last = (podman("logs", name) or "").strip().splitlines()[-1:]
            raise RuntimeError(f"exited {state['ExitCode']}: {' '.join(last)[:200]}")
        tini = int(state["Pid"])
        children = Path(f"/proc/{tini}/task/{tini}/children").read_text().split()
        return rss_kib(int(children[0])) / 1024, rss_kib(tini) / 1024
    finally:
        podman("rm", "--force", "--time", "2", name)


def compressed(image: str) -> int:
    """Bytes of `podman save IMAGE | gzip -c`: about what a pull transfers."""
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", CONF)}
    save = subprocess.Popen(["podman", "save", image], stdout=subprocess.PIPE, env=env)
    gz = subprocess.run(["gzip", "-c"], stdin=save.stdout, capture_output=True, check=True)
    save.wait()
    return len(gz.stdout)


def largest(image: str, n: int = 10) -> list[tuple[int, str]]:
    """The image's n largest files, in bytes (a hard link counted once)."""
    ctr = podman("create", image).strip()
    try:
        root = podman("mount", ctr).strip()
        seen: set[int] = set()
        files: list[tuple[int, str]] = []
        for dirpath, _dirs, names in os.walk(root):
            for f in names:
                st = os.lstat(os.path.join(dirpath, f))
                if st.st_ino in seen or not os.path.isfile(os.path.join(dirpath, f)):
                    continue
                seen.add(st.st_ino)
                files.append((st.st_size, "/" + os.path.relpath(os.path.join(dirpath, f), root)))
        return sorted(files, reverse=True)[:n]
    finally:
        podman("umount", ctr)
        podman("rm", "--force", ctr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", default="0.1.0")
    ap.add_argument("--largest", action="store_true", help="also list each image's largest paths")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = os.path.join(tmp, "repo.git")
        work = os.path.join(tmp, "work")
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "m",
            "GIT_AUTHOR_EMAIL": "m@x",
            "GIT_COMMITTER_NAME": "m",
            "GIT_COMMITTER_EMAIL": "m@x",
        }
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", repo], check=True)
        subprocess.run(["git", "clone", "-q", repo, work], check=True, stderr=subprocess.DEVNULL)
        Path(work, "app.conf").write_text("x\n")
        for cmd in (["add", "."], ["commit", "-qm", "c"], ["push", "-q", "origin", "HEAD:main"]):
            subprocess.run(["git", *cmd], cwd=work, check=True, env=env)
        os.chmod(tmp, 0o755)
        print("| image | size | compressed | idle RSS of the program | tini |")
        print("|---|---|---|---|---|")
        for program in ALL:
            image = f"localhost/podkit-{program}:{opts.tag}"
            s = size(image)
            try:
                if program == "base":
                    raise RuntimeError("not a program (custom sidecars build FROM it)")
                if program not in IDLE_ARGS:
                    raise RuntimeError("it needs a peer to idle (API server, certificate)")
                prog, tini = idle_rss(image, program, repo)
                mem = f"{prog:.1f} MiB | {tini:.1f} MiB"
            except (RuntimeError, subprocess.CalledProcessError) as e:
                mem = f"not measured: {e} | -"
            z = compressed(image)
            print(f"| `podkit-{program}` | {s / 1e6:.1f} MB | {z / 1e6:.1f} MB | {mem} |")
        if opts.largest:
            for program in ALL:
                image = f"localhost/podkit-{program}:{opts.tag}"
                print(f"\n`podkit-{program}`, ten largest paths:\n")
                for b, path in largest(image):
                    print(f"- {b / 1e6:.1f} MB `{path}`")


if __name__ == "__main__":
    main()
