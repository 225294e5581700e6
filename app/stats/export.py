"""Exports that never leave a half-written file: tidy votes CSV and the statistics JSON.

Every writer renders the whole content in memory first, writes it to a
temporary file in the destination's directory and renames it over the
destination (atomic on POSIX and Windows), so after an error the destination
is either absent or still holds its previous, complete content.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from app.stats.exclusions import apply_exclusions
from app.stats.votes import Vote
from model_core.files import atomic_write_text

TIDY_COLUMNS = ("study", "pair", "label", "class_name", "seed", "rater", "choice", "side_shown", "position",
                "response_time_ms", "timestamp", "excluded", "attention_check", "exclusion_reason")


def write_atomic(path: str | Path, text: str) -> Path:
    return atomic_write_text(path, text, durable=True)


def stats_json(stats: dict) -> str:
    # allow_nan=False: a NaN that slipped through is a bug to surface, not invalid JSON to ship.
    return json.dumps(stats, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_stats_json(path: str | Path, stats: dict) -> Path:
    return write_atomic(path, stats_json(stats))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def tidy_votes_csv(votes: Sequence[Vote], *, max_attention_failures: int = 0) -> str:
    """One row per vote, one column per variable.

    ``excluded`` is true for every vote the statistics leave out (flagged,
    attention-check pair, or a rater excluded for failed checks) and
    ``exclusion_reason`` says which; ``side_shown`` is the side of method A.
    When any vote records whether its attention check passed, an
    ``attention_passed`` column follows. The file reads back with
    :func:`app.stats.votes.read_votes_csv`.
    """
    reasons = apply_exclusions(votes, max_failures=max_attention_failures).reasons
    with_passed = any(v.attention_passed is not None for v in votes)
    # A multi-arm study's votes carry the arms of their pair (side_shown is then the side of arm_a).
    with_arms = any(v.arm_a is not None for v in votes)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TIDY_COLUMNS + (("attention_passed",) if with_passed else ())
                    + (("arm_a", "arm_b") if with_arms else ()))
    for v, why in zip(votes, reasons):
        writer.writerow([_cell(x) for x in (
            v.study_id, v.pair_id, v.label, v.class_name, v.seed, v.rater_id, v.choice, v.robust_side,
            v.position, v.response_ms, v.created_at, why is not None, v.is_attention_check, why)]
            + ([_cell(v.attention_passed)] if with_passed else [])
            + ([_cell(v.arm_a), _cell(v.arm_b)] if with_arms else []))
    return buf.getvalue()


def write_votes_csv(path: str | Path, votes: Sequence[Vote], *, max_attention_failures: int = 0) -> Path:
    return write_atomic(path, tidy_votes_csv(votes, max_attention_failures=max_attention_failures))


# -- Table 2 (the paper's layout) as CSV and LaTeX ---------------------------------------------------

def _table2_rows(stats: dict) -> list[dict]:
    a, b = stats["methods"]["a"], stats["methods"]["b"]
    rows = []
    for row in stats["thresholds"]:
        cells = {}
        for key in (a, b, "none"):
            lo, hi = row["ci"][key]
            cells[key] = {"percent": row["percent"][key], "count": row["counts"][key], "ci": (lo, hi)}
        rows.append({"threshold": row["threshold"], "cells": cells})
    return rows


def table2_csv(stats: dict) -> str:
    """The threshold table as CSV: per threshold and column, the percentage, the pair count and the
    95% Clopper-Pearson interval (in percent) of that share of all pairs."""
    a, b = stats["methods"]["a"], stats["methods"]["b"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["threshold_percent"]
    for key in (a, b, "none"):
        name = "no_preference" if key == "none" else key
        header += [f"{name}_percent", f"{name}_pairs", f"{name}_ci_low", f"{name}_ci_high"]
    writer.writerow(header + ["n_pairs"])
    for row in _table2_rows(stats):
        out = [f"{100 * row['threshold']:g}"]
        for key in (a, b, "none"):
            c = row["cells"][key]
            lo, hi = c["ci"]
            out += [f"{c['percent']:.1f}", c["count"], "" if lo is None else f"{100 * lo:.1f}",
                    "" if hi is None else f"{100 * hi:.1f}"]
        writer.writerow(out + [stats["n_pairs"]])
    return buf.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def table2_latex(stats: dict, *, caption: str | None = None, label: str = "tab:preference") -> str:
    """The threshold table as a LaTeX ``table`` (booktabs), with 95% intervals under each percentage."""
    a, b = stats["methods"]["a"], stats["methods"]["b"]
    if caption is None:
        caption = (f"Percentage of image pairs where raters prefer {a.capitalize()}, {b.capitalize()}, or have "
                   f"no preference ({stats['n_pairs']} pairs, {stats['n_answers']} answers by {stats['n_raters']} "
                   "raters). A pair is preferred at threshold X when more than X of its side answers chose that "
                   "method. Brackets: 95\\% Clopper--Pearson intervals.")
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{lccc}", r"\toprule",
             rf"Threshold & {latex_escape(a.capitalize())} & {latex_escape(b.capitalize())} & No Preference \\",
             r"\midrule"]
    for row in _table2_rows(stats):
        cells = []
        for key in (a, b, "none"):
            c = row["cells"][key]
            lo, hi = c["ci"]
            interval = "" if lo is None else rf" {{\footnotesize [{100 * lo:.1f}, {100 * hi:.1f}]}}"
            cells.append(rf"{c['percent']:.1f}\%{interval}")
        lines.append(rf"{100 * row['threshold']:g}\% & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
