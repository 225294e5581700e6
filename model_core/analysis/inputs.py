"""Images an analysis starts from: uploaded PNGs, or picks from the preset's held-out set (torch-free).

An uploaded image must already have the preset's size (no resizing: the
analysis should look at the pixels the researcher gave); colour is converted
to the preset's channels (grey for 1, RGB for 3). It is kept as a
*normalised* PNG (re-encoded, no metadata), named by the sha256 of those
bytes, so the same pixels always have the same name wherever they are stored
(the CLI's ``OUT/inputs/``, the service's media folder) and a sidecar can
name its inputs by hash.

Held-out picks are ``count`` images of the preset's held-out split
(``model_core.data.heldout_data``), the first ``count`` of a permutation drawn
with ``seed``: a pure function of (data, count, seed).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from model_core.files import sha256_bytes

MAX_UPLOAD_PIXELS = 1024 * 1024  # refuse decompression bombs before decoding


class ImageRefused(ValueError):
    """An upload that is not a PNG of the right size; the message says what is wrong."""


@dataclass(frozen=True)
class InputImage:
    sha256: str             # of ``png``
    png: bytes              # normalised PNG bytes
    label: int | None       # the true class, when known
    pixels: np.ndarray      # uint8 (H, W, C)

    def ref(self) -> dict:
        """How settings and sidecars name it."""
        return {"sha256": self.sha256, "label": self.label}


def decode_upload(data: bytes, *, image_size: int, channels: int) -> np.ndarray:
    """uint8 (H, W, C) pixels of a PNG with the preset's size, converted to its channels."""
    from PIL import Image, UnidentifiedImageError

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ImageRefused("not a PNG file (it does not start with the PNG signature)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise ImageRefused(f"not a PNG file (Pillow reads it as {im.format})")
            w, h = im.size
            if w * h > MAX_UPLOAD_PIXELS:
                raise ImageRefused(f"{w}x{h} pixels is far larger than any preset's images")
            if (w, h) != (image_size, image_size):
                raise ImageRefused(f"the image is {w}x{h} but this preset's images are {image_size}x{image_size}")
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except ImageRefused:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        raise ImageRefused(f"cannot decode the PNG ({type(exc).__name__}: {exc})") from None
    return arr.reshape(image_size, image_size, channels)


def normalised_png(pixels: np.ndarray) -> bytes:
    from model_core.images import encode_png

    return encode_png(pixels)


def from_pixels(pixels: np.ndarray, label: int | None) -> InputImage:
    png = normalised_png(pixels)
    return InputImage(sha256_bytes(png), png, label, pixels)


def from_png(data: bytes, label: int | None, *, image_size: int, channels: int) -> InputImage:
    return from_pixels(decode_upload(data, image_size=image_size, channels=channels), label)


def heldout_indices(n_available: int, count: int, seed: int) -> list[int]:
    if not 1 <= count <= n_available:
        raise ValueError(f"count must be in 1..{n_available}, got {count}")
    return [int(i) for i in np.random.default_rng(seed).permutation(n_available)[:count]]
