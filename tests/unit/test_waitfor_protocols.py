"""The hand-written protocol pieces of waitfor's probes, checked against their specs."""

from __future__ import annotations

import hashlib
import struct

import pytest
from podkit.initkits.waitfor.base import NotReady
from podkit.initkits.waitfor.probe_amqp import _close_reason
from podkit.initkits.waitfor.probe_dns import _encode_name, parse_answer
from podkit.initkits.waitfor.probe_grpc import _hpack_int, health_status
from podkit.initkits.waitfor.probe_mongodb import bson_decode, bson_encode
from podkit.initkits.waitfor.probe_mysql import _mgf1, _oaep_encrypt, _rsa_public_key, _scramble


def test_hpack_integers_rfc7541_c1() -> None:
    assert _hpack_int(10, 5, 0) == b"\x0a"  # C.1.1
    assert _hpack_int(1337, 5, 0) == b"\x1f\x9a\x0a"  # C.1.2
    assert _hpack_int(42, 8, 0) == b"\x2a"  # C.1.3


def test_health_status_protobuf() -> None:
    assert health_status(b"\x08\x01") == 1  # SERVING
    assert health_status(b"\x08\x02") == 2
    assert health_status(b"") == 0  # proto3: UNKNOWN is left out
    assert health_status(b"\x12\x03abc\x08\x01") == 1  # an unknown field is skipped
    with pytest.raises(NotReady):
        health_status(b"\x08")


def test_dns_answer_with_compression() -> None:
    q = (
        struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 0)
        + _encode_name("db.app.test")
        + b"\0\x01\0\x01"
    )
    answer = bytearray(q)
    answer[2:4] = b"\x81\x80"  # a response, no error
    answer[6:8] = b"\0\x02"  # two answers
    for ip in (b"\x0a\x01\x00\x05", b"\x0a\x01\x00\x06"):
        answer += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + ip  # name: pointer to 12
    assert parse_answer(bytes(answer), 0x1234, 1) == ["10.1.0.5", "10.1.0.6"]
    nx = bytearray(q)
    nx[2:4] = b"\x81\x83"
    with pytest.raises(NotReady, match="NXDOMAIN"):
        parse_answer(bytes(nx), 0x1234, 1)
    loop = bytearray(answer[: len(q)]) + b"\xc0" + bytes([len(q)])  # a pointer to itself
    loop[6:8] = b"\0\x01"
    with pytest.raises(NotReady, match="malformed"):
        parse_answer(bytes(loop), 0x1234, 1)


def test_mysql_native_password_scramble() -> None:
    # The server checks SHA1(scramble + SHA1(SHA1(pw))) XOR reply == SHA1(pw).
    scramble, pw = b"12345678901234567890", "secret"
    reply = _scramble("mysql_native_password", pw, scramble)
    stage2 = hashlib.sha1(hashlib.sha1(pw.encode()).digest()).digest()
    h = hashlib.sha1(scramble + stage2).digest()
    assert hashlib.sha1(bytes(a ^ b for a, b in zip(reply, h, strict=True))).digest() == stage2
    assert _scramble("mysql_native_password", "", scramble) == b""


def test_rsa_oaep_round_trip_with_a_small_key() -> None:
    """RFC 8017 OAEP decoding by hand with a known key: what the server does."""
    p, q, e = 2**127 - 1, 2**521 - 1, 65537  # Mersenne primes: a 648-bit modulus
    n, d = p * q, pow(e, -1, (p - 1) * (q - 1))
    der_int = lambda v: b"\x02" + _der_len(v) + v  # noqa: E731
    body = der_int(_be(n, leading_zero=True)) + der_int(_be(e))
    pem = (
        "-----BEGIN RSA PUBLIC KEY-----\n"
        + __import__("base64").b64encode(b"\x30" + _der_len(body) + body).decode()
        + "\n-----END RSA PUBLIC KEY-----\n"
    )
    assert _rsa_public_key(pem.encode()) == (n, e)
    message = b"password\0"
    k = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(_oaep_encrypt(message, n, e), "big"), d, n).to_bytes(k, "big")
    assert em[0] == 0
    masked_seed, masked_db = em[1:21], em[21:]
    seed = bytes(a ^ b for a, b in zip(masked_seed, _mgf1(masked_db, 20), strict=True))
    db = bytes(a ^ b for a, b in zip(masked_db, _mgf1(seed, k - 21), strict=True))
    assert db[:20] == hashlib.sha1(b"").digest()
    assert db[20:].lstrip(b"\0") == b"\x01" + message


def _be(value: int, leading_zero: bool = False) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return b"\0" + raw if leading_zero and raw[0] & 0x80 else raw


def _der_len(data: bytes) -> bytes:
    n = len(data)
    return bytes([n]) if n < 128 else bytes([0x80 | 2]) + n.to_bytes(2, "big")


def test_bson_round_trip_and_amqp_close() -> None:
    doc = bson_encode({"hello": 1, "$db": "admin", "ok": True})
    assert bson_decode(doc) == {"hello": 1, "$db": "admin", "ok": True}
    reason = struct.pack("!HB", 403, 5) + b"nope!" + b"\0" * 4
    assert _close_reason(reason).startswith("login refused: wrong user or password")
