"""What went into an artifact: code version, library versions, weight hashes."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from functools import lru_cache
from pathlib import Path

from model_core import __version__
from model_core.files import sha256_file

PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def _checkout_root() -> Path | None:
    """This project's source checkout, if the package runs from one (not an installed wheel).

    An installed package's parent is site-packages, which may itself lie inside some
    other git repository; asking git there would report that repository's commit.
    """
    try:
        text = (PACKAGE_PARENT / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return PACKAGE_PARENT if re.search(r'(?m)^name\s*=\s*"robust-guidance"', text) else None


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` inside this project's git checkout, else the package version."""
    root = _checkout_root()
    if root is None:
        return __version__
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"


_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached per (path, size, mtime): weights are hashed once per process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        _hash_cache[key] = sha256_file(path)
    return _hash_cache[key]


def environment() -> dict[str, str]:
    import numpy
    import torch

    return {"code_version": code_version(), "torch": str(torch.__version__), "numpy": numpy.__version__,
            "python": platform.python_version()}
