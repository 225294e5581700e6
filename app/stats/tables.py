"""Per-pair counts, the threshold table (paper Table 2), answer shares and totals.

Definitions (docs/statistics.md states them word for word): for each pair,
r = answers for method A, v = answers for method B, s = "same". At threshold
X a pair is preferred for A if r/(r+v) > X, for B if v/(r+v) > X, otherwise
"no preference" (also when r + v = 0).

The comparison is exact: the threshold is taken as the decimal it is written
as (0.6 means 3/5), and ``r/(r+v) > X`` is evaluated as ``r*den > num*(r+v)``
in integers, so a pair exactly at the threshold is never preferred, whatever
floating-point rounding would have said.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from app.stats.votes import SAME, Vote

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class PairCounts:
    """Answers per pair, pairs in a stable order (numeric ids numerically, then the rest as text)."""

    pair_ids: list
    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    labels: list
    class_names: list
    seeds: list

    @property
    def n(self) -> np.ndarray:
        return self.a + self.b + self.same

    @property
    def sides(self) -> np.ndarray:
        return self.a + self.b

    def share_a(self) -> np.ndarray:
        """r/(r+v) per pair; NaN where nobody picked a side."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.sides > 0, self.a / np.maximum(self.sides, 1), np.nan)


def natural_key(value) -> tuple:
    """Sort key: integers (or digit strings) by value, everything else as text after them."""
    text = str(value)
    if isinstance(value, (int, np.integer)) or text.isdigit():
        return (0, int(text), "")
    return (1, 0, text)


def pair_counts(votes: Sequence[Vote], method_a: str, method_b: str) -> PairCounts:
    order: dict = {}
    for vote in votes:
        order.setdefault(vote.pair_id, vote)
    pair_ids = sorted(order, key=natural_key)
    index = {pid: i for i, pid in enumerate(pair_ids)}
    counts = np.zeros((len(pair_ids), 3), dtype=np.int64)
    column = {method_a: 0, method_b: 1, SAME: 2}
    for vote in votes:
        counts[index[vote.pair_id], column[vote.choice]] += 1
    first = [order[pid] for pid in pair_ids]
    return PairCounts(pair_ids=pair_ids, a=counts[:, 0], b=counts[:, 1], same=counts[:, 2],
                      labels=[v.label for v in first], class_names=[v.class_name for v in first],
                      seeds=[v.seed for v in first])


def check_thresholds(thresholds: Sequence[float]) -> list[float]:
    """Thresholds must lie in [0.5, 1]: below 1/2 a pair could be "preferred" for both methods."""
    out = []
    for x in thresholds:
        x = float(x)
        if not (0.5 <= x <= 1.0):
            raise ValueError(f"threshold {x!r} is outside [0.5, 1]; below 0.5 a pair could count for both "
                             "methods at once")
        if x in out:
            raise ValueError(f"threshold {x!r} is given twice")
        out.append(x)
    if not out:
        raise ValueError("give at least one threshold")
    return out


def _exact(x: float) -> Fraction:
    # repr() is the shortest decimal that round-trips, i.e. what the user wrote.
    return Fraction(repr(float(x)))


def preferred(a: np.ndarray, b: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (preferred for A, preferred for B) at ``threshold``, compared exactly."""
    frac = _exact(threshold)
    num, den = frac.numerator, frac.denominator
    # Python integers: exact whatever the size of the threshold's denominator.
    a_obj = np.asarray(a, dtype=object)
    b_obj = np.asarray(b, dtype=object)
    total = a_obj + b_obj
    pref_a = np.asarray(a_obj * den > total * num, dtype=bool) & (np.asarray(total, dtype=np.int64) > 0)
    pref_b = np.asarray(b_obj * den > total * num, dtype=bool) & (np.asarray(total, dtype=np.int64) > 0)
    return pref_a, pref_b


def round_to_total(fractions: Sequence[float], decimals: int = 1, total: float = 100.0) -> list[float]:
    """Percentages rounded to ``decimals`` places that still add up to ``total`` (largest remainder).

    Plain rounding can print 33.3 / 33.3 / 33.3; a table whose rows must sum to
    100% should not.
    """
    scale = 10 ** decimals
    units = [f * total * scale for f in fractions]
    floors = [int(np.floor(u + 1e-9)) for u in units]
    missing = round(total * scale) - sum(floors)
    order = sorted(range(len(units)), key=lambda i: (-(units[i] - floors[i]), i))
    for i in order[:max(missing, 0)]:
        floors[i] += 1
    return [f / scale for f in floors]


def threshold_table(counts: PairCounts, thresholds: Sequence[float], method_a: str, method_b: str) -> list[dict]:
    """One row per threshold: fractions of pairs for A, for B and for neither (summing to 1) and their counts."""
    n = len(counts.pair_ids)
    rows = []
    for x in check_thresholds(thresholds):
        pref_a, pref_b = preferred(counts.a, counts.b, x)
        n_a, n_b = int(pref_a.sum()), int(pref_b.sum())
        n_none = n - n_a - n_b
        fr = [n_a / n, n_b / n, n_none / n]
        pct = round_to_total(fr)
        rows.append({
            "threshold": x,
            method_a: fr[0], method_b: fr[1], "none": fr[2],
            "counts": {method_a: n_a, method_b: n_b, "none": n_none},
            "percent": {method_a: pct[0], method_b: pct[1], "none": pct[2]},
        })
    return rows


def answer_totals(counts: PairCounts, method_a: str, method_b: str) -> dict:
    a, b, s = int(counts.a.sum()), int(counts.b.sum()), int(counts.same.sum())
    total = a + b + s
    shares = [a / total, b / total, s / total] if total else [None, None, None]
    return {
        "counts": {method_a: a, method_b: b, SAME: s},
        "shares": {method_a: shares[0], method_b: shares[1], SAME: shares[2]},
        "share_a_among_sides": a / (a + b) if a + b else None,
    }


def spread(values: np.ndarray) -> dict:
    values = np.asarray(values)
    if values.size == 0:
        return {"min": None, "mean": None, "max": None}
    return {"min": int(values.min()), "mean": float(values.mean()), "max": int(values.max())}
