"""Tensor <-> image conversion and PNGs that carry their own reproduction recipe."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from model_core.files import atomic_write_bytes


def to_uint8(x) -> np.ndarray:
    """(N, C, H, W) or (C, H, W) floats in [-1, 1] -> (N, H, W, C) / (H, W, C) uint8.

    Truncates like the ADM sampling script ((x + 1) * 127.5, clamped, cast),
    so our PNGs of the official models match theirs byte for byte.
    """
    import torch

    if isinstance(x, torch.Tensor):
        x = ((x.detach().float().cpu() + 1) * 127.5).clamp(0, 255).to(torch.uint8)
        arr = x.numpy()
    else:
        arr = np.clip((np.asarray(x, dtype=np.float32) + 1) * 127.5, 0, 255).astype(np.uint8)
    return np.moveaxis(arr, -3, -1)


def _pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(np.ascontiguousarray(array))


def encode_png(array: np.ndarray, metadata: dict | None = None) -> bytes:
    """PNG bytes; ``metadata`` goes into tEXt chunks (non-strings as JSON).

    No timestamp is written, so the same image and metadata always give the
    same bytes (the service names files by their hash).
    """
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(str(key), value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    buf = io.BytesIO()
    _pil(array).save(buf, format="PNG", pnginfo=info, optimize=False)
    return buf.getvalue()


def save_png(array: np.ndarray, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write atomically: a crash never leaves a truncated PNG behind."""
    return atomic_write_bytes(path, encode_png(array, metadata))


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    with Image.open(path) as im:
        return dict(im.text)


def grid(images: list[np.ndarray], ncols: int, pad: int = 2, value: int = 255) -> np.ndarray:
    """Tile HxWxC images into one picture (rows of ``ncols``)."""
    if not images:
        raise ValueError("grid needs at least one image")
    h, w, c = images[0].shape
    nrows = (len(images) + ncols - 1) // ncols
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), value, dtype=np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = im
    return out
