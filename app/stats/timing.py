"""Response times: a careless-answer screen, not a test."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.stats.votes import SAME, Vote

DEFAULT_FAST_MS = 1000.0


def _quartiles(values: np.ndarray) -> dict:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1)}


def response_times(votes: Sequence[Vote], method_a: str, method_b: str, *, fast_ms: float = DEFAULT_FAST_MS) -> dict:
    timed = [v for v in votes if v.response_ms is not None]
    if not timed:
        return {"available": False, "n": 0, "fast_ms": fast_ms}
    ms = np.array([v.response_ms for v in timed], dtype=float)
    fast = ms < fast_ms
    per_choice = {}
    for choice in (method_a, method_b, SAME):
        sel = np.array([v.choice == choice for v in timed])
        per_choice[choice] = _quartiles(ms[sel])["median"] if sel.any() else None
    fast_raters = sorted({v.rater_id for v, f in zip(timed, fast) if f}, key=str)
    return {
        "available": True, "n": int(ms.size), **_quartiles(ms),
        "fast_ms": fast_ms, "n_fast": int(fast.sum()), "share_fast": float(fast.mean()),
        "raters_with_fast_answers": len(fast_raters),
        "median_by_choice": per_choice,
    }
