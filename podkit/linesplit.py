"""Bytes to lines, without I/O: one implementation for files (podkit.tailer)
and streams (logformat --stdin)."""

from __future__ import annotations


def decode_cut(raw: bytes) -> str:
    """Decode a cut-off line, dropping a multi-byte character split by the cut."""
    end = len(raw)
    back = 0
    while back < 3 and end - back > 0 and (raw[end - back - 1] & 0xC0) == 0x80:
        back += 1
    if end - back > 0:
        lead = raw[end - back - 1]
        need = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if lead >= 0xF0 else 1
        if back + 1 < need:
            raw = raw[: end - back - 1]
    return raw.decode("utf-8", "replace")


def cut_long(block: bytes, limit: int) -> tuple[list[str], list[int]]:
    """The slow path: split a block that holds over-long lines, cutting each.

    Public, with decode_cut(), so that a reader of a stream (logformat's
    --stdin) cuts lines exactly the way files are cut here.
    """
    texts: list[str] = []
    cut: list[int] = []
    for i, raw in enumerate(block.split(b"\n")):
        if len(raw) > limit:
            cut.append(i)
            texts.append(decode_cut(raw[:limit]))
        else:
            texts.append(raw.decode("utf-8", "replace"))
    return texts, cut
