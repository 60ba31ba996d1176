"""The program images themselves: entrypoint, user, labels, contents, size."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.harness import CONF, PROGRAMS, podman

LABELS = ("source", "version", "revision", "licenses")


def run(image: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    ep = ["--entrypoint", entrypoint] if entrypoint else []
    return subprocess.run(
        ["podman", "run", "--rm", "--read-only", "--network", "none", *ep, image, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "CONTAINERS_CONF": str(CONF),
            "CONTAINERS_REGISTRIES_CONF": os.environ["CONTAINERS_REGISTRIES_CONF"],
        },
    )


@pytest.mark.parametrize("program", PROGRAMS)
def test_image(e2e: E2E, program: str) -> None:
    e2e.require(program)
    image = e2e.images[program]
    # From the registry by reference: the local build's tag is gone.
    podman("pull", "--quiet", image, timeout=300)
    info = json.loads(podman("image", "inspect", image))[0]
    config = info["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"]
    labels = config["Labels"]
    for key in LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), key
    # What every node pulls: at most 60 MB, 110 MB with git (docs/images.md); the
    # proxy too, with Debian's cryptography (test_proxy_signs_jwts).
    bar = {"gitsync": 110_000_000}.get(program, 60_000_000)
    assert info["Size"] <= bar, f"{info['Size'] / 1e6:.1f} MB, bar {bar / 1e6:.0f} MB"

    # The entrypoint is the program: --help is its own, on a read-only root.
    res = run(image, "--help")
    assert res.returncode == 0, res.stderr
    assert f"podkit {program}" in res.stdout, res.stdout[:300]

    # Only this program's extras; no pip; git only where gitsync needs it.
    script = (
        "import importlib.util as u, shutil, os; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('pip', 'setuptools', 'git', 'watchdog', 'uvloop')} | "
        "{'git-binary': shutil.which('git') is not None, 'uid': os.getuid()}))"
    )
    res = run(image, "-c", f"import json; {script}", entrypoint="/opt/podkit/bin/python")
    assert res.returncode == 0, res.stderr
    has = json.loads(res.stdout)
    assert has["uid"] == 65532
    assert not has["pip"] and not has["setuptools"], has
    assert has["git"] == has["git-binary"] == (program == "gitsync"), has
    assert has["uvloop"] == (program == "proxy"), has
    assert has["watchdog"] == (program in ("logship", "reloader", "metrics", "logformat")), has
    # The proxy's request path runs compiled by mypyc (tools/compile.py), built on
    # the host for the image's Python; every other image runs the source alone.
    res = run(
        image,
        "-c",
        "import json; from podkit.ambassadors.proxy.compiled import compiled_modules as c; "
        "print(json.dumps(c()))",
        entrypoint="/opt/podkit/bin/python",
    )
    assert res.returncode == 0, res.stderr
    assert set(json.loads(res.stdout).values()) == {program == "proxy"}, res.stdout

    # Every module of the venv imports as far as the standard library goes:
    # images/slim.sh removes stdlib modules nothing imports (unittest, xml,
    # multiprocessing, pydoc, ...), and a dependency that did import one would
    # fail here, not in a pod. Other failures (a missing optional third-party
    # module, a module that needs a running loop) are not this test's business.
    res = run(image, "-c", IMPORT_ALL, entrypoint="/opt/podkit/bin/python")
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert found["modules"] > 100, found
    assert found["missing_stdlib"] == {}, found
    assert found["test_suites"] == [], found


IMPORT_ALL = """
import importlib, json, os, pkgutil, sys, sysconfig, warnings
warnings.simplefilter("ignore")
site = sysconfig.get_paths()["purelib"]
missing, count = {}, 0
for mod in pkgutil.walk_packages([site], onerror=lambda name: None):
    parts = mod.name.split(".")
    # __main__ modules run a program; tests and test helpers (aiohttp's
    # test_utils, uvloop's _testbase) never run in a pod.
    if parts[-1] == "__main__" or "tests" in parts or "test" in parts[-1]:
        continue
    count += 1
    try:
        importlib.import_module(mod.name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in sys.stdlib_module_names:
            missing[mod.name] = exc.name
    except BaseException:
        pass
# No test suites of dependencies (gitdb's and smmap's ship one): the Dockerfile removes them.
suites = [d for d, subdirs, _ in os.walk(site) if os.path.basename(d) in ("test", "tests")]
print(json.dumps({"modules": count, "missing_stdlib": missing, "test_suites": suites}))
"""

# Mints a JWT with each key type the proxy signs with (--jwt-private-key-file,
# private_key_jwt) through the proxy's own SigningKey, and verifies it with the
# public key: the image's cryptography is Debian's, linked to the image's libssl.
SIGN_JWTS = """
import json
import jwt
from cryptography.hazmat.backends.openssl.backend import backend
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from podkit.ambassadors.proxy.signing import SigningKey

import cryptography, os
top = os.path.dirname(cryptography.__file__)
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(top) for f in fs)
out = {"openssl": backend.openssl_version_text(), "version": cryptography.__version__, "size": size}
keys = {
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}
for alg, key in keys.items():
    path = f"/tmp/{alg}.pem"
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    signer = SigningKey(path)
    token = signer.sign({"sub": "podkit", "aud": "api"}, kid="k1")
    claims = jwt.decode(token, key.public_key(), algorithms=[alg], audience="api")
    out[alg] = [signer.algorithm, jwt.get_unverified_header(token)["alg"], claims["sub"]]
print(json.dumps(out))
"""


def test_proxy_signs_jwts(e2e: E2E) -> None:
    """RS256, ES256 and EdDSA JWTs signed in the proxy's image verify."""
    e2e.require("proxy")
    image = e2e.images["proxy"]
    podman("pull", "--quiet", image, timeout=300)
    res = run(image, "-c", SIGN_JWTS, entrypoint="/opt/podkit/bin/python")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for alg in ("RS256", "ES256", "EdDSA"):
        assert out[alg] == [alg, alg, "podkit"], out
    # Debian's build, linked to the image's libssl3/libcrypto3 (OpenSSL 3.0), not
    # PyPI's wheel with its own static OpenSSL (12.7 MB; Debian's is 2.9 MB).
    assert out["openssl"].startswith("OpenSSL 3.0."), out
    assert out["size"] < 5_000_000, out
