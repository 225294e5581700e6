"""The per-study HTML report: one self-contained page (inline CSS, inline SVG, no scripts).

``render_report(stats, title=...)`` takes the dict of :func:`compute_all` and
returns HTML. Plots are SVG drawn here, so the page needs no plotting
library, no CDN and no network; the only external references are the pair
images, and only when the caller passes their URLs (the survey embeds them as
``data:`` URLs, so a saved copy is whole). Table 2 comes with links that
download it as CSV and LaTeX, embedded the same way.

``study`` (optional, from the survey) adds the header a paper needs: ids,
hashes, settings, dates, counts with reasons, a methods paragraph, the
changes made after opening, and a "provisional" banner while it collects.
"""
from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup, escape

# app/templates: shipped in the wheel; in the source tree a link to the top-level templates/.
TEMPLATES = Path(str(resources.files("app") / "templates"))
COLORS = {"a": "#0a6eb4", "b": "#d97a00", "none": "#9a9a9a"}
_IMAGE_DATA_PREFIXES = ("data:image/png;", "data:image/jpeg;", "data:image/webp;", "data:image/gif;")


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = fmt_pct
    env.filters["pval"] = fmt_p
    env.filters["num"] = fmt_num
    env.filters["ci"] = fmt_ci
    return env


def fmt_pct(value: float | None, decimals: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{decimals}f}%"


def fmt_num(value: float | None, decimals: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.{decimals}f}"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "< 1e-300"
    if value < 1e-4:
        return f"{value:.1e}"
    return f"{value:.4f}" if value < 0.01 else f"{value:.3f}"


def fmt_ci(interval: Sequence | None, as_percent: bool = True) -> str:
    if not interval or interval[0] is None or interval[1] is None:
        return "n/a"
    lo, hi = interval
    if as_percent:
        return f"[{100 * lo:.1f}%, {100 * hi:.1f}%]"
    return f"[{lo:.3f}, {hi:.3f}]"


def _safe_url(url: str, pair_id: Any) -> str:
    url = str(url).strip()
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https", "") or url.lower().startswith(_IMAGE_DATA_PREFIXES):
        return url
    raise ValueError(f"images: pair {pair_id!r}: URL scheme {scheme!r} is not allowed "
                     "(use http, https, a relative path or a data:image URL)")


def normalise_images(images: Mapping | None, method_a: str, method_b: str) -> dict[str, dict[str, str]]:
    """pair_id -> {'a': url, 'b': url}; accepts [url_a, url_b] or {method_a: url, method_b: url} per pair."""
    out: dict[str, dict[str, str]] = {}
    for pid, value in (images or {}).items():
        if isinstance(value, Mapping):
            missing = [m for m in (method_a, method_b) if m not in value]
            if missing:
                raise ValueError(f"images: pair {pid!r} has no URL for {', '.join(missing)}")
            urls = (value[method_a], value[method_b])
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            urls = tuple(value)
        else:
            raise ValueError(f"images: pair {pid!r}: give [URL of {method_a}, URL of {method_b}] or "
                             f"{{\"{method_a}\": URL, \"{method_b}\": URL}}")
        out[str(pid)] = {"a": _safe_url(urls[0], pid), "b": _safe_url(urls[1], pid)}
    return out


def share_plot_svg(stats: dict, *, width: int = 880, height: int = 300) -> Markup:
    """Every pair's share for A among side answers, sorted, as bars from 50%, with the threshold lines."""
    a, b = stats["methods"]["a"], stats["methods"]["b"]
    pairs = stats["pairs"]
    decided = sorted((p for p in pairs if p["share"] is not None),
                     key=lambda p: (p["share"], p[a] + p[b]))
    undecided = [p for p in pairs if p["share"] is None]
    left, right, top, bottom = 48, 40, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    slots = max(len(decided) + len(undecided), 1)
    step = plot_w / slots

    def y(v: float) -> float:
        return top + (1 - v) * plot_h

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
             f'role="img" aria-labelledby="share-plot-title" class="plot">'),
             f'<title id="share-plot-title">Share of side answers for {escape(a)} per pair, sorted</title>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" class="tick" text-anchor="end">'
                     f'{int(tick * 100)}%</text>')
    for row in stats["thresholds"]:
        x = row["threshold"]
        if x <= 0.5:
            continue
        for level, cls in ((x, "thr-a"), (1 - x, "thr-b")):
            parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(level):.1f}" y2="{y(level):.1f}" '
                         f'class="thr {cls}"/>')
        # Labels sit in the right margin so that bars never cover them.
        for level in (x, 1 - x):
            parts.append(f'<text x="{left + plot_w + 4}" y="{y(level) + 3.5:.1f}" class="thr-label">'
                         f'{level * 100:g}%</text>')
    gap = 0.15 if step > 3 else 0.0
    for i, p in enumerate(decided):
        share = p["share"]
        w = min(max(step * (1 - gap), 0.6), 28.0)  # few pairs: slim bars, not slabs
        x0 = left + i * step + (step - w) / 2
        if share == 0.5:
            cls, y0, h = "bar-none", y(0.5) - 1, 2
        else:
            cls = "bar-a" if share > 0.5 else "bar-b"
            y0, h = min(y(share), y(0.5)), max(abs(y(share) - y(0.5)), 1)
        label = (f"{p['pair_id']}"
                 + (f" ({p['class_name']})" if p.get("class_name") else "")
                 + f": {100 * share:.1f}% for {a} ({p[a]} {a}, {p[b]} {b}, {p['same']} same)")
        parts.append(f'<rect x="{x0:.2f}" y="{y0:.2f}" width="{w:.2f}" height="{h:.2f}" class="{cls}">'
                     f'<title>{escape(label)}</title></rect>')
    for j, p in enumerate(undecided):
        cx = left + (len(decided) + j + 0.5) * step
        parts.append(f'<circle cx="{cx:.2f}" cy="{y(0.5):.1f}" r="{max(min(step / 2, 3), 1.2):.2f}" '
                     f'class="bar-none"><title>{escape(str(p["pair_id"]))}: no side answers</title></circle>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(0.5):.1f}" y2="{y(0.5):.1f}" class="mid"/>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 10}" class="axis" text-anchor="middle">'
                 f'{len(decided)} pairs, sorted by their share for {escape(a)}'
                 + (f"; {len(undecided)} without side answers at the right" if undecided else "") + '</text>')
    parts.append(f'<text x="14" y="{top + plot_h / 2:.1f}" class="axis" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">share for {escape(a)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def answer_bar_svg(stats: dict, *, width: int = 880, height: int = 34) -> Markup:
    """A single stacked bar of the answer shares (A, same, B)."""
    a, b = stats["methods"]["a"], stats["methods"]["b"]
    shares = stats["answer_shares"]
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="answer shares" class="plot">')]
    x = 0.0
    for key, cls in ((a, "bar-a"), ("same", "bar-none"), (b, "bar-b")):
        share = shares.get(key) or 0.0
        w = share * width
        if w > 0:
            parts.append(f'<rect x="{x:.2f}" y="2" width="{w:.2f}" height="{height - 4}" class="{cls}">'
                         f'<title>{escape(key)}: {100 * share:.1f}%</title></rect>')
            if w > 70:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{height / 2 + 5:.1f}" class="bar-text" '
                             f'text-anchor="middle">{escape(key)} {100 * share:.1f}%</text>')
        x += w
    parts.append("</svg>")
    return Markup("".join(parts))


def _data_url(text: str, media_type: str) -> str:
    return f"data:{media_type};charset=utf-8;base64," + base64.b64encode(text.encode("utf-8")).decode("ascii")


def per_class_intervals(stats: dict, confidence: float = 0.95) -> list[list]:
    """Per class: the exact interval of A's share among side answers (answers treated as independent)."""
    from app.stats.significance import clopper_pearson

    a, b = stats["methods"]["a"], stats["methods"]["b"]
    return [clopper_pearson(c["answer_counts"][a], c["answer_counts"][a] + c["answer_counts"][b], confidence)
            for c in stats["per_class"]]


def render_report(stats: dict, *, title: str, images: Mapping | None = None, study: Mapping | None = None) -> str:
    """HTML of one study's report. ``images``: optional pair_id -> (URL of A's image, URL of B's image).

    ``study``: optional header from the survey (``app.survey.report.study_header``): ``facts``
    (label, value) rows, ``counts`` rows, ``methods`` (a paragraph), ``amendments``, ``provisional``.
    """
    from app.stats.export import table2_csv, table2_latex

    a, b = stats["methods"]["a"], stats["methods"]["b"]
    image_map = normalise_images(images, a, b)
    by_id = {str(p["pair_id"]): p for p in stats["pairs"]}

    def cards(ids: Sequence) -> list[dict]:
        return [{**by_id[str(pid)], "images": image_map.get(str(pid))} for pid in ids]

    env = _environment()
    return env.get_template("report.html").render(
        title=title, s=stats, a=a, b=b, A=a.capitalize(), B=b.capitalize(), colors=COLORS,
        share_plot=share_plot_svg(stats), answer_bar=answer_bar_svg(stats),
        most=cards(stats["most_preferred"]), least=cards(stats["least_preferred"]),
        isfinite=math.isfinite, study=study, class_ci=per_class_intervals(stats),
        table2_csv=_data_url(table2_csv(stats), "text/csv"), table2_tex=_data_url(table2_latex(stats), "text/x-tex"),
    )
