"""Keeping raters blind to which method made an image.

The service's PNGs carry their recipe (method, scale, seed) in text chunks,
and their URLs are stable per image. Raters instead get each image through
a URL made of their own assignment and a side (``.../img/<assignment>/left.png``)
and bytes with every metadata chunk removed; the pixels are untouched (the
image data chunks are copied as they are, so nothing is re-encoded).
"""
from __future__ import annotations

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that describe rather than draw the image: text, time stamp, EXIF.
DROPPED = {b"tEXt", b"iTXt", b"zTXt", b"tIME", b"eXIf"}


class NotAPNG(ValueError):
    pass


def strip_metadata(data: bytes) -> bytes:
    if not data.startswith(PNG_SIGNATURE):
        raise NotAPNG("not a PNG file")
    out = [PNG_SIGNATURE]
    i = len(PNG_SIGNATURE)
    while i < len(data):
        if i + 8 > len(data):
            raise NotAPNG("truncated PNG chunk header")
        length = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        end = i + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise NotAPNG(f"truncated PNG chunk {kind!r}")
        if kind not in DROPPED:
            out.append(data[i:end])
        i = end
        if kind == b"IEND":
            break
    return b"".join(out)
