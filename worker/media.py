"""Content-addressed PNG storage under the media directory.

A file is named by the SHA-256 of its bytes (``ab/abcdef....png``), so writing
the same image twice (a task that runs again after its worker died) lands on
the same file, and a file's name proves its content. The database holds the
metadata and the relative path.
"""
from __future__ import annotations

from pathlib import Path

from model_core.files import atomic_write_bytes, sha256_bytes


def relative_path(sha256: str, suffix: str = ".png") -> str:
    return f"{sha256[:2]}/{sha256}{suffix}"


def store_png(media_dir: Path, data: bytes, suffix: str = ".png") -> tuple[str, str]:
    """Write ``data`` (if not already there) and return (sha256, path relative to media_dir).

    ``suffix`` names other content the same way (an analysis's markdown table: ``.md``).
    """
    digest = sha256_bytes(data)
    rel = relative_path(digest, suffix)
    path = Path(media_dir) / rel
    if path.is_file() and path.stat().st_size == len(data):
        return digest, rel
    # Atomic: readers see either no file or the whole file, never a prefix.
    atomic_write_bytes(path, data, durable=True)
    return digest, rel


def resolve(media_dir: Path, rel: str) -> Path:
    """The absolute path of a stored file; refuses anything outside the media directory."""
    root = Path(media_dir).resolve()
    path = (root / rel).resolve()
    if root not in path.parents:
        raise ValueError(f"media path {rel!r} escapes the media directory")
    return path
