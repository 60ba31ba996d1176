"""podkit.tailer.compressed: a compressed rotation read at uncompressed offsets."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from podkit.tailer.compressed import Decompressed, compression, read_head
from tests.helpers import missing

DATA = b"".join(b"line %05d of a rotated log\n" % i for i in range(5000))


def opened(path: Path) -> int:
    return os.open(path, os.O_RDONLY)


def zstd_bytes(data: bytes, frames: int = 1) -> bytes:
    try:
        import zstandard
    except ImportError:
        missing("the zstandard module reads .zst rotations")
    step = len(data) // frames + 1
    c = zstandard.ZstdCompressor()
    return b"".join(c.compress(data[i : i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_reads_at_uncompressed_offsets_forward_and_back(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "app.log.1.z"
    p.write_bytes(gzip.compress(DATA) if kind == "gzip" else zstd_bytes(DATA, frames=3))
    fd = opened(p)
    try:
        assert compression(fd) == kind
        assert read_head(fd, 256) == DATA[:256]
        z = Decompressed(fd, kind)
        assert z.pread(100, 0) == DATA[:100]
        assert z.pread(100, 100) == DATA[100:200]  # sequential
        assert z.pread(50, 90_000) == DATA[90_000:90_050]  # forward, across frames
        assert z.pread(10, 5) == DATA[5:15]  # backward: started over
        assert z.pread(10, len(DATA)) == b""  # the end
        assert z.pread(10, len(DATA) + 10**6) == b""  # beyond it
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # the fd's own position never moved
        z.close()
    finally:
        os.close(fd)


def test_a_gzip_still_being_written_reads_as_nothing_yet(tmp_path: Path) -> None:
    whole = gzip.compress(DATA)
    p = tmp_path / "app.log.1.gz"
    p.write_bytes(whole[: len(whole) // 2])
    fd = opened(p)
    try:
        z = Decompressed(fd, "gzip")
        assert z.pread(len(DATA), 0) == b""  # incomplete: nothing rather than a torn read
        p.write_bytes(whole)  # the compressor finished (same inode)
        assert z.pread(len(DATA), 0) == DATA
    finally:
        os.close(fd)


def test_plain_and_corrupt_files(tmp_path: Path) -> None:
    p = tmp_path / "plain.log"
    p.write_bytes(DATA[:300])
    fd = opened(p)
    assert compression(fd) is None and read_head(fd, 256) == DATA[:256]
    os.close(fd)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    fd = opened(bad)
    try:
        assert compression(fd) == "gzip"
        assert Decompressed(fd, "gzip").pread(10, 0) == b""
        assert read_head(fd, 10) == b""
    finally:
        os.close(fd)


def test_a_read_error_is_not_taken_for_an_incomplete_stream(tmp_path: Path) -> None:
    p = tmp_path / "app.log.1.gz"
    p.write_bytes(gzip.compress(DATA))
    fd = opened(p)
    z = Decompressed(fd, "gzip")
    os.close(fd)  # EBADF: the disk, not the format
    with pytest.raises(OSError):
        z.pread(10, 0)


def test_a_zstd_stream_cut_short_or_corrupt_reads_as_nothing_yet(tmp_path: Path) -> None:
    whole = zstd_bytes(DATA)
    for i, body in enumerate([whole[: len(whole) // 2], whole[:4] + b"\x00garbage" * 20]):
        p = tmp_path / f"app.log.{i}.zst"
        p.write_bytes(body)
        fd = opened(p)
        try:
            assert compression(fd) == "zstd"
            assert Decompressed(fd, "zstd").pread(len(DATA), 0) == b""
        finally:
            os.close(fd)
