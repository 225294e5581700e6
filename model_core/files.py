"""Files that are written whole or not at all, and the sha256 of files and texts.

Torch-free: the API, the workers, the CLI and the core all write through
these. A write goes to a unique temporary file in the destination's folder
and is renamed over the destination (atomic on POSIX and Windows), so a
crash or an error leaves either no file or the previous, complete one, and
never a prefix; the temporary file is removed when the write fails.
``durable=True`` also fsyncs before the rename, for data a reader on
another machine may depend on (media, exports).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

CHUNK = 1 << 20


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, durable: bool = False,
                 suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, then rename it to ``path``.

    ``suffix`` is the temporary file's ending, for writers that insist on
    one (``numpy.savez`` appends ``.npz`` to any other name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> Path:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    return atomic_write(path, lambda p: p.write_bytes(data), durable=durable)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = False) -> Path:
    """UTF-8, newlines written as given (no platform translation)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")

    def write(p: Path) -> None:
        with open(p, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, write, durable=durable)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
