"""podkit.ambassadors.proxy.signing under mutation testing (docs/testing.md, issue 25).

A silent bug here signs with the wrong key or algorithm, drops the kid, or
re-reads (or stops re-reading) the key file. So every token is verified with
PyJWT against the public half of a key generated in the test, its header is
compared whole, and the reads of the key file are counted through the module's
own `load_private_key`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from podkit.ambassadors.proxy import signing
from podkit.ambassadors.proxy.signing import SigningKey, algorithm_for, load_private_key

CLAIMS = {
    "iss": "podkit",
    "sub": "svc",
    "aud": "api",
    "iat": 1_000_000,
    "exp": 1_000_300,
    "jti": "j-1",
    "team": "a=b",
}


def pem(key: Any, password: bytes | None = None) -> bytes:
    enc: Any = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    )


def write_key(path: Path, key: Any) -> Any:
    path.write_bytes(pem(key))
    return key.public_key()


def decode(token: str, public: Any, alg: str) -> dict[str, Any]:
    # exp far in the past on purpose (fixed claims): only the signature and aud are checked
    out: dict[str, Any] = jwt.decode(
        token, public, algorithms=[alg], audience="api", options={"verify_exp": False}
    )
    return out


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each read of a key file, by path (SigningKey.load reads through this name)."""
    seen: list[str] = []
    real = signing.load_private_key

    def counting(path: str) -> Any:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(signing, "load_private_key", counting)
    return seen


@pytest.mark.parametrize(
    ("make", "alg"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    ],
)
def test_each_key_type_signs_with_its_algorithm(tmp_path: Path, make: Any, alg: str) -> None:
    path = tmp_path / "key"
    public = write_key(path, make())
    k = SigningKey(str(path))
    token = k.sign(dict(CLAIMS), kid="k1")
    assert k.algorithm == alg
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": "k1", "typ": "JWT"}
    assert decode(token, public, alg) == CLAIMS
    # the algorithm asked for, when it is the key's own, is accepted
    wanted = SigningKey(str(path), alg)
    assert decode(wanted.sign(dict(CLAIMS)), public, alg) == CLAIMS
    assert algorithm_for(load_private_key(str(path))) == alg


def test_no_kid_means_no_kid_header(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_key(path, ed25519.Ed25519PrivateKey.generate())
    k = SigningKey(str(path))
    assert jwt.get_unverified_header(k.sign({"a": 1})) == {"alg": "EdDSA", "typ": "JWT"}
    assert jwt.get_unverified_header(k.sign({"a": 1}, kid="")) == {"alg": "EdDSA", "typ": "JWT"}


def test_a_key_that_is_not_usable_is_refused_with_why(tmp_path: Path) -> None:
    es = tmp_path / "es"
    write_key(es, ec.generate_private_key(ec.SECP256R1()))
    for wanted in ("RS256", "EdDSA"):
        with pytest.raises(ValueError, match=rf"^the key signs ES256, not {wanted}$"):
            SigningKey(str(es), wanted).sign({})
    p384 = tmp_path / "p384"
    write_key(p384, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match=r"^EC key on secp384r1: ES256 needs P-256$"):
        SigningKey(str(p384)).load()
    ed = tmp_path / "ed448"
    write_key(ed, ed448.Ed448PrivateKey.generate())
    with pytest.raises(ValueError, match=r"^unsupported key type Ed448PrivateKey$"):
        SigningKey(str(ed)).sign({})
    with pytest.raises(ValueError, match=r"^unsupported key type NoneType$"):
        algorithm_for(None)
    junk = tmp_path / "junk"
    junk.write_text("not a key")
    with pytest.raises(ValueError, match=r"^not an unencrypted PEM private key: ") as info:
        SigningKey(str(junk)).sign({})
    # the parser's own exception is not chained: its text is already in the message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    # a passphrase-protected key: cryptography raises TypeError, refused the same way
    locked = tmp_path / "locked"
    locked.write_bytes(pem(ed25519.Ed25519PrivateKey.generate(), b"secret"))
    with pytest.raises(ValueError, match=r"^not an unencrypted PEM private key: .*encrypted"):
        SigningKey(str(locked)).sign({})
    # a public key is not a private key
    pub = tmp_path / "pub"
    pub.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match=r"^not an unencrypted PEM private key: "):
        load_private_key(str(pub))


def test_a_key_file_that_cannot_be_read_is_an_oserror(tmp_path: Path) -> None:
    # not there yet and never read: nothing new to read (as for a key that vanished),
    # until it appears
    later = tmp_path / "later"
    k = SigningKey(str(later))
    assert not k.changed()
    write_key(later, ed25519.Ed25519PrivateKey.generate())
    assert k.changed()
    with pytest.raises(FileNotFoundError):
        SigningKey(str(tmp_path / "gone")).sign({})
    with pytest.raises(IsADirectoryError):
        SigningKey(str(tmp_path)).sign({})


def test_the_file_is_read_once_until_it_changes(
    tmp_path: Path, reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "key"
    first = write_key(path, ed25519.Ed25519PrivateKey.generate())
    k = SigningKey(str(path))
    assert k.changed()  # never read
    decode(k.sign(dict(CLAIMS)), first, "EdDSA")
    decode(k.sign(dict(CLAIMS)), first, "EdDSA")
    assert not k.changed() and reads == [str(path)]
    # replaced (a new inode, as a rotated Secret): the next token uses the new key
    new = tmp_path / "new"
    second = write_key(new, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    os.replace(new, path)
    assert k.changed()
    token = k.sign(dict(CLAIMS), kid="k2")
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": "k2", "typ": "JWT"}
    assert decode(token, second, "RS256") == CLAIMS
    with pytest.raises(jwt.InvalidAlgorithmError):  # not the old EdDSA key's token
        decode(k.sign(dict(CLAIMS)), first, "EdDSA")
    assert reads == [str(path)] * 2 and k.algorithm == "RS256"
    assert not caplog.records


def test_a_broken_new_key_keeps_the_old_one_and_is_read_once(
    tmp_path: Path, reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="podkit.proxy")
    path = tmp_path / "key"
    first = write_key(path, ec.generate_private_key(ec.SECP256R1()))
    k = SigningKey(str(path), "ES256")
    k.load()
    assert reads == [str(path)]
    path.write_text("broken, and longer than the key was " * 10)
    for _ in range(2):
        token = k.sign(dict(CLAIMS), kid="old")
        assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "old", "typ": "JWT"}
        assert decode(token, first, "ES256") == CLAIMS
    assert reads == [str(path)] * 2 and not k.changed()
    [rec] = caplog.records
    assert rec.getMessage() == "cannot use the new signing key; signing with the old one"
    assert rec.levelno == logging.WARNING and rec.name == "podkit.proxy"
    assert rec.file == str(path)  # type: ignore[attr-defined]
    assert rec.error.startswith("not an unencrypted PEM private key: ")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="PEM private key"):
        k.load()  # load itself still says why
    # a key of another algorithm than the one asked for: refused the same way
    write_key(path, ed25519.Ed25519PrivateKey.generate())
    caplog.clear()
    assert decode(k.sign(dict(CLAIMS)), first, "ES256") == CLAIMS
    assert decode(k.sign(dict(CLAIMS)), first, "ES256") == CLAIMS
    [rec] = caplog.records
    assert rec.error == "the key signs EdDSA, not ES256"  # type: ignore[attr-defined]
    assert k.algorithm == "ES256"
    # fixed: picked up on the next token
    second = write_key(path, ec.generate_private_key(ec.SECP256R1()))
    assert decode(k.sign(dict(CLAIMS)), second, "ES256") == CLAIMS


def test_a_vanished_key_keeps_the_old_one_and_is_noticed_once(
    tmp_path: Path, reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="podkit.proxy")
    path = tmp_path / "key"
    first = write_key(path, ed25519.Ed25519PrivateKey.generate())
    k = SigningKey(str(path))
    k.sign({})
    path.unlink()
    with pytest.raises(FileNotFoundError):
        k.load()
    # while it is gone it is not looked for again on every token
    assert not k.changed()
    assert decode(k.sign(dict(CLAIMS)), first, "EdDSA") == CLAIMS
    assert reads == [str(path)] and not caplog.records
    # back (as a new file): read again and used
    second = write_key(path, ed25519.Ed25519PrivateKey.generate())
    assert k.changed()
    assert decode(k.sign(dict(CLAIMS)), second, "EdDSA") == CLAIMS
    assert reads == [str(path)] * 2


def test_a_vanished_key_noticed_by_sign_warns_once(
    tmp_path: Path, reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="podkit.proxy")
    path = tmp_path / "key"
    first = write_key(path, ed25519.Ed25519PrivateKey.generate())
    k = SigningKey(str(path))
    k.sign({})
    path.unlink()
    for _ in range(3):
        assert decode(k.sign(dict(CLAIMS)), first, "EdDSA") == CLAIMS
    [rec] = caplog.records
    assert rec.file == str(path)  # type: ignore[attr-defined]
    assert "No such file" in rec.error  # type: ignore[attr-defined]
    assert reads == [str(path)]


def test_a_first_load_that_fails_is_retried(tmp_path: Path, reads: list[str]) -> None:
    path = tmp_path / "key"
    path.write_text("junk")
    k = SigningKey(str(path))
    with pytest.raises(ValueError):
        k.sign({})
    # nothing to sign with yet: every token tries the file again, whatever its signature
    with pytest.raises(ValueError):
        k.sign({})
    assert reads == [str(path)] * 2 and k.key is None and k.algorithm == ""
    public = write_key(path, ed25519.Ed25519PrivateKey.generate())
    assert decode(k.sign(dict(CLAIMS)), public, "EdDSA") == CLAIMS
