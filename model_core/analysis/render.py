"""Labelled picture grids for the analyses (numpy and Pillow; torch-free).

A grid is rows of cells (uint8 HxWxC images, or None for an empty cell),
enlarged by an integer factor with nearest-neighbour resampling so that small
images (28x28 digits) stay readable and exact, with text drawn by Pillow's
``ImageDraw``: a title, column headers, row labels on the left, a caption
under any cell and footers under the columns. The font is the one Pillow
bundles (``ImageFont.load_default``), so the same Pillow draws the same bytes
on every machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (90, 90, 90)
FONT_SIZE = 11
PAD = 4
MIN_CELL = 64  # cells are enlarged to at least this many pixels


@lru_cache(maxsize=4)
def font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def minmax(a: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 1] over the whole array (all channels together), as the paper's Figure 3.

    A constant array (no gradient at all) maps to 0.5 everywhere rather than dividing by zero.
    """
    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if not hi > lo:
        return np.full(a.shape, 0.5)
    return (a - lo) / (hi - lo)


def unit_to_uint8(a: np.ndarray) -> np.ndarray:
    """[0, 1] floats (C, H, W) -> uint8 (H, W, C), rounding to nearest."""
    return np.moveaxis(np.clip(np.rint(np.asarray(a) * 255.0), 0, 255).astype(np.uint8), 0, -1)


def signed_to_uint8(a: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] (C, H, W) -> uint8 (H, W, C) by ``model_core.images.to_uint8``'s rule (truncation)."""
    return np.moveaxis(np.clip((np.asarray(a, dtype=np.float32) + 1) * 127.5, 0, 255).astype(np.uint8), 0, -1)


def scale_for(image_size: int) -> int:
    return max(1, math.ceil(MIN_CELL / image_size))


@dataclass
class Grid:
    rows: list[list[np.ndarray | None]]
    title: str | None = None
    col_headers: list[str] | None = None
    row_labels: list[str] | None = None
    captions: list[list[str]] | None = None   # one line or two (``\n``) under each cell, per row
    col_footers: list[str] | None = None
    notes: list[str] = field(default_factory=list)  # lines under the grid
    scale: int | None = None


def _text_size(draw: ImageDraw.ImageDraw, text: str, f) -> tuple[int, int]:
    if not text:
        return 0, 0
    box = draw.multiline_textbbox((0, 0), text, font=f, spacing=2)
    return box[2] - box[0], box[3] - box[1]


def render(g: Grid) -> np.ndarray:
    """The grid as one uint8 RGB picture (H, W, 3)."""
    cells = [c for row in g.rows for c in row if c is not None]
    if not cells:
        raise ValueError("a grid needs at least one image")
    h, w = cells[0].shape[:2]
    scale = g.scale or scale_for(max(h, w))
    ch, cw = h * scale, w * scale
    ncols = max(len(r) for r in g.rows)
    f = font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def height_of(texts) -> int:
        return max([_text_size(probe, t, f)[1] for t in texts if t] or [0])

    label_w = max([_text_size(probe, t, f)[0] for t in (g.row_labels or []) if t] or [0])
    label_w = label_w + 2 * PAD if label_w else 0
    col_w = max([cw] + [_text_size(probe, t, f)[0] + PAD for t in (g.col_headers or []) + (g.col_footers or [])]
                + [_text_size(probe, t, f)[0] + PAD for row in (g.captions or []) for t in row])
    title_h = height_of([g.title]) + 2 * PAD if g.title else 0
    head_h = height_of(g.col_headers or []) + 2 * PAD if g.col_headers else 0
    cap_h = [height_of(row) + PAD if row and any(row) else 0 for row in (g.captions or [[] for _ in g.rows])]
    cap_h += [0] * (len(g.rows) - len(cap_h))
    foot_h = height_of(g.col_footers or []) + 2 * PAD if g.col_footers else 0
    notes_h = sum(height_of([n]) + 2 for n in g.notes) + (2 * PAD if g.notes else 0)

    width = PAD + label_w + ncols * (col_w + PAD)
    width = max(width, PAD + max([_text_size(probe, t, f)[0] for t in [g.title or ""] + g.notes] or [0]) + PAD)
    height = PAD + title_h + head_h + sum(ch + c + PAD for c in cap_h) + foot_h + notes_h
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    y = PAD
    if g.title:
        draw.multiline_text((PAD, y), g.title, fill=INK, font=f, spacing=2)
        y += title_h
    x0 = PAD + label_w
    if g.col_headers:
        for j, text in enumerate(g.col_headers):
            tw, _ = _text_size(draw, text, f)
            draw.multiline_text((x0 + j * (col_w + PAD) + (col_w - tw) // 2, y + PAD // 2), text, fill=INK, font=f,
                                spacing=2, align="center")
        y += head_h
    for i, row in enumerate(g.rows):
        if g.row_labels and i < len(g.row_labels) and g.row_labels[i]:
            _, th = _text_size(draw, g.row_labels[i], f)
            draw.multiline_text((PAD, y + (ch - th) // 2), g.row_labels[i], fill=INK, font=f, spacing=2)
        for j, cell in enumerate(row):
            if cell is None:
                continue
            pic = Image.fromarray(_rgb(cell)).resize((cw, ch), Image.NEAREST)
            img.paste(pic, (x0 + j * (col_w + PAD) + (col_w - cw) // 2, y))
        y += ch
        if g.captions and i < len(g.captions):
            for j, text in enumerate(g.captions[i]):
                if text:
                    tw, _ = _text_size(draw, text, f)
                    draw.multiline_text((x0 + j * (col_w + PAD) + (col_w - tw) // 2, y + 1), text, fill=MUTED,
                                        font=f, spacing=2, align="center")
        y += cap_h[i] + PAD
    if g.col_footers:
        for j, text in enumerate(g.col_footers):
            tw, _ = _text_size(draw, text, f)
            draw.multiline_text((x0 + j * (col_w + PAD) + (col_w - tw) // 2, y), text, fill=INK, font=f,
                                spacing=2, align="center")
        y += foot_h
    if g.notes:
        y += PAD
        for note in g.notes:
            draw.multiline_text((PAD, y), note, fill=MUTED, font=f, spacing=2)
            y += height_of([note]) + 2
    return np.asarray(img)


def _rgb(cell: np.ndarray) -> np.ndarray:
    cell = np.asarray(cell)
    if cell.dtype != np.uint8:
        raise ValueError(f"grid cells must be uint8, got {cell.dtype}")
    if cell.ndim == 2:
        cell = cell[..., None]
    if cell.shape[-1] == 1:
        cell = np.repeat(cell, 3, axis=-1)
    return np.ascontiguousarray(cell)
