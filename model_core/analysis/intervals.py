"""Means and proportions with 95% intervals, for the analyses' summary numbers (numpy/scipy; torch-free).

* a mean over images: Student's t interval, mean +- t_{0.975, n-1} * sd / sqrt(n);
* a paired difference (two classifiers on the same images and noise): the t
  interval of the per-image differences, which is narrower than comparing two
  separate intervals because the images' own variation cancels;
* a proportion (how often a network reads the target): the Wilson score
  interval, which stays inside [0, 1] and behaves at 0 and 1.

Values that are not finite (a cosine of an all-zero gradient) are left out and
the count ``n`` says how many were used.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

LEVEL = 0.95


def _round(x: float) -> float:
    # Six significant digits: summaries are read by people and compared across reruns bit for bit
    # through the files, not through these.
    return float(f"{x:.6g}")


def mean_interval(values, level: float = LEVEL) -> dict[str, Any]:
    """{"mean", "low", "high", "n"} over the finite values; low/high None with fewer than 2."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    m = float(v.mean())
    if n < 2:
        return {"mean": _round(m), "low": None, "high": None, "n": n}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return {"mean": _round(m), "low": _round(m - half), "high": _round(m + half), "n": n}


def paired_difference(a, b, level: float = LEVEL) -> dict[str, Any]:
    """The mean of a - b over the items where both are finite, with its t interval."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size} vs {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    return mean_interval(a[keep] - b[keep], level)


def proportion_interval(successes: int, n: int, level: float = LEVEL) -> dict[str, Any]:
    """{"rate", "low", "high", "k", "n"}: the Wilson score interval."""
    from scipy import stats

    if n <= 0:
        return {"rate": None, "low": None, "high": None, "k": int(successes), "n": int(n)}
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 (k = n) the bound is exactly 0 (1); the formula leaves rounding dust there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return {"rate": _round(p), "low": _round(low), "high": _round(high), "k": int(successes), "n": int(n)}


def fmt_mean(entry: dict, digits: int = 3) -> str:
    """``0.123 [0.101, 0.145]`` for a table cell."""
    if entry.get("mean", entry.get("rate")) is None:
        return "-"
    m = entry.get("mean", entry.get("rate"))
    if entry.get("low") is None:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"
