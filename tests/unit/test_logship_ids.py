"""Elasticsearch `_id`s: the same for a line however the file happens to be cut in chunks.

A crash makes logship read again from its checkpoint; chunk boundaries then
differ from the first run's (they depend on how much was written at each
read), so ids must come from the line and the file, never from the chunk.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from podkit.sidecars.logship import line_offsets, record_ids

from podkit.tailer import Chunk, Tailer, TailerConfig
from tests.helpers import wait_until_async


async def read_all(tmp: Path, **kw: object) -> list[Chunk]:
    cfg = TailerConfig(
        paths=[str(tmp / "*.log")], poll_interval=0.05, identify=True, max_line_bytes=100, **kw
    )  # type: ignore[arg-type]
    t = Tailer(cfg)
    await t.start()
    out: list[Chunk] = []

    async def consume() -> None:
        async for c in t.chunks():
            out.append(c)
            t.ack(c)

    task = asyncio.create_task(consume())
    # Read by the reading loop (chunked as it goes), not by drain() in one pass.
    await wait_until_async(
        lambda: all(f.read_pos == os.fstat(f.fd).st_size for f in t._files), what="files read"
    )
    await asyncio.wait_for(t.drain(), 10)  # a drain that never ends fails
    await asyncio.wait_for(task, 5)
    await t.close()
    return out


def ids_of(chunks: list[Chunk]) -> list[str]:
    return [i for c in chunks for i in record_ids(c)]


CLEAN = [b"plain %d" % i for i in range(40)] + ["ünïcödé ☃ 😀".encode(), b"", b"tab\tend"]


async def test_offsets_are_exact_for_clean_lines(tmp_path: Path) -> None:
    raw = b"".join(x + b"\n" for x in CLEAN)
    (tmp_path / "a.log").write_bytes(raw)
    want, pos = [], 0
    for x in CLEAN:
        want.append(pos)
        pos += len(x) + 1
    for kw in ({"chunk_bytes": 1 << 20}, {"chunk_bytes": 37, "max_chunk_lines": 3}):
        chunks = await read_all(tmp_path, **kw)
        assert [o for c in chunks for o in line_offsets(c)] == want, kw


async def test_ids_do_not_depend_on_chunking(tmp_path: Path) -> None:
    lines = [
        *CLEAN[:10],
        *[b"bad \xff\xfe utf-8", b"y" * 500],  # unclean: replaced bytes, a cut line
        *CLEAN[10:30],
        b"\x00\x01 binary \xc3",
        *CLEAN[30:],
    ]
    (tmp_path / "a.log").write_bytes(b"".join(x + b"\n" for x in lines))
    whole = ids_of(await read_all(tmp_path, chunk_bytes=1 << 20))
    assert len(whole) == len(lines) and len(set(whole)) == len(lines)
    for kw in (
        {"chunk_bytes": 64, "max_chunk_lines": 3},
        {"chunk_bytes": 1 << 20, "max_chunk_lines": 7},
        {"chunk_bytes": 200, "max_chunk_lines": 0},
    ):
        assert ids_of(await read_all(tmp_path, **kw)) == whole, kw


async def test_a_reused_inode_with_new_content_gets_new_ids(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"old first line\nsame\n")
    before = ids_of(await read_all(tmp_path))
    ino = os.stat(path).st_ino
    # Rewritten in place (same inode): same offset and text of "same", new first bytes.
    with open(path, "r+b") as fh:
        fh.write(b"new first line\nsame\n")
    assert os.stat(path).st_ino == ino
    after = ids_of(await read_all(tmp_path))
    assert len(after) == 2 and not set(before) & set(after)
