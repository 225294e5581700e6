"""Keeping raters blind to which method made an image.

The service's PNGs carry their recipe (method, scale, seed) in text chunks,
and their URLs are stable per image. Raters instead get each image through
a URL made of their own assignment and a side (``.../img/<assignment>/left.png``)
and bytes with every metadata chunk removed; the pixels are untouched (the
image data chunks are copied as they are, so nothing is re-encoded).

Only the chunks that draw the image are kept (a list of what may stay, not of
what must go), so a text-like chunk a future encoder adds is dropped too. The
originals themselves are never served to raters (``app.survey.access``).
"""
from __future__ import annotations

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that draw the image: header, palette, transparency, data, end, and how to show its colours.
# Everything else (text, time stamps, EXIF, private chunks) describes it, and is dropped.
KEPT = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT"}


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
        if kind in KEPT:
            out.append(data[i:end])
        i = end
        if kind == b"IEND":
            break
    return b"".join(out)
