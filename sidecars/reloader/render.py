"""--render SRC:DEST: the config the app reads, made from a template in the watched volume.

`$(NAME)` and `${NAME}` are replaced by environment variables (a name starts
with a letter or `_`, so Prometheus' `$1` and `${1}` relabel references stay
as they are), `$(file:/path)` by the content of a file inside an allowed
`--render-files-from` directory (one trailing newline dropped), `$$(`/`$${`
by a literal `$(`/`${`. A source ending in `.gz` is gunzipped first (as the
Thanos reloader does). An unset variable or a refused file is an error: the
old DEST stays in place and nothing is reloaded.

The template comes from a volume others can write, so `$(file:…)` is refused
unless the operator named the directories it may read from: otherwise any
ConfigMap author could copy the pod's Secrets into the rendered config.
"""

from __future__ import annotations

import os
import re
import stat
import zlib
from dataclasses import dataclass, field

from podkit.fsutil import atomic_write

from .tree import inside

#: A rendered config (and a gunzipped source) larger than this is refused: a
#: small .gz can expand a thousandfold.
MAX_BYTES = 32 * 1024 * 1024
_REF = re.compile(
    rb"\$\$(?=[({])"
    rb"|\$\(file:([^)\s]+)\)"
    rb"|\$\(([A-Za-z_][A-Za-z0-9_]*)\)"
    rb"|\$\{([A-Za-z_][A-Za-z0-9_]*)\}"
)


class RenderError(Exception):
    """The template cannot be rendered; the message names the source and why."""


@dataclass(frozen=True)
class Spec:
    src: str
    dest: str

    @classmethod
    def parse(cls, text: str) -> Spec:
        src, sep, dest = text.partition(":")
        if not sep or not src.strip() or not dest.strip():
            raise ValueError(f"not SRC:DEST: {text!r}")
        return cls(os.path.abspath(src.strip()), os.path.abspath(dest.strip()))


@dataclass
class Rendered:
    spec: Spec
    data: bytes
    #: the files read through $(file:...), watched so that a rotation re-renders
    files: list[str] = field(default_factory=list)


def _read(path: str, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RenderError(f"{path}: not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise RenderError(f"{path}: larger than {limit} bytes")
    return data


def _gunzip(data: bytes, src: str) -> bytes:
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, MAX_BYTES + 1)
    except zlib.error as exc:
        raise RenderError(f"{src}: not gzip: {exc}") from None
    if len(out) > MAX_BYTES or d.unconsumed_tail:
        raise RenderError(f"{src}: expands to more than {MAX_BYTES} bytes")
    return out


def render(
    spec: Spec, env: dict[str, str], files_from: list[str], follow: bool = False
) -> Rendered:
    """Render one spec in memory (nothing is written). Raises RenderError or OSError."""
    src = spec.src
    if not follow:
        real = os.path.realpath(src)
        if not inside(real, os.path.realpath(os.path.dirname(src))):
            raise RenderError(f"{src}: a link out of its directory (see --follow-symlinks)")
    data = _read(src, MAX_BYTES)
    if src.endswith(".gz"):
        data = _gunzip(data, src)
    files: list[str] = []
    roots = [os.path.realpath(d) for d in files_from]

    def sub(m: re.Match[bytes]) -> bytes:
        path, name1, name2 = m.groups()
        if path is not None:
            p = os.fsdecode(path)
            real = os.path.realpath(p)
            if not os.path.isabs(p) or not any(inside(real, r) for r in roots):
                raise RenderError(
                    f"{src}: $(file:{p}) is outside every --render-files-from directory"
                )
            files.append(p)
            try:
                content = _read(real, MAX_BYTES)
            except OSError as exc:
                raise RenderError(f"{src}: $(file:{p}): {exc.strerror or exc}") from None
            return content[:-1] if content.endswith(b"\n") else content
        name = os.fsdecode(name1 or name2 or b"")
        if not name:  # the $$ escape
            return b"$"
        if name not in env:
            raise RenderError(f"{src}: environment variable {name} is not set")
        return os.fsencode(env[name])

    out = _REF.sub(sub, data)
    if len(out) > MAX_BYTES:
        raise RenderError(f"{src}: renders to more than {MAX_BYTES} bytes")
    return Rendered(spec, out, files)


def write(rendered: Rendered) -> bool:
    """Write DEST atomically unless it already holds exactly this; True if written."""
    dest = rendered.spec.dest
    try:
        if _read(dest, len(rendered.data)) == rendered.data:
            return False
    except (OSError, RenderError):
        pass  # missing, different size, or not a regular file: replace it
    atomic_write(dest, rendered.data)
    return True
