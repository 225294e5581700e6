"""``compute_all``: every statistic of a study as one JSON-serialisable dict.

This is what ``rguide stats --json`` prints, what the HTML report renders and
what the survey API serves. It is deterministic for given votes, settings and
seed (no timestamps inside), holds plain Python types only, and uses null
wherever a number is undefined (never NaN).
"""
from __future__ import annotations

import math
import platform
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from app.stats.agreement import agreement
from app.stats.exclusions import apply_exclusions
from app.stats.position import position_bias
from app.stats.significance import (
    CONFIDENCE,
    PRIMARY_TEST,
    PRIMARY_THRESHOLD,
    cluster_bootstrap,
    exact_binomial,
    sign_tests,
    wald_p_from_se,
)
from app.stats.tables import (
    DEFAULT_THRESHOLDS,
    PairCounts,
    answer_totals,
    check_thresholds,
    natural_key,
    pair_counts,
    spread,
    threshold_table,
)
from app.stats.timing import DEFAULT_FAST_MS, response_times
from app.stats.votes import (
    DEFAULT_A,
    DEFAULT_B,
    SAME,
    Vote,
    check_methods,
    votes_from_rows,
)

SCHEMA = "rguide.stats/1"
DEFAULT_SEED = 0
DEFAULT_N_BOOT = 2000


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("robust-guidance", "numpy", "scipy", "statsmodels", "krippendorff"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def jsonable(value: Any) -> Any:
    """Plain JSON types all the way down; NaN and infinities become None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot put {type(value).__name__} into the statistics JSON")


def _pairs_rows(counts: PairCounts, method_a: str, method_b: str) -> list[dict]:
    share = counts.share_a()
    return [{"pair_id": pid, "label": counts.labels[i], "class_name": counts.class_names[i],
             "seed": counts.seeds[i], method_a: int(counts.a[i]), method_b: int(counts.b[i]),
             SAME: int(counts.same[i]), "n": int(counts.n[i]),
             "share": None if np.isnan(share[i]) else float(share[i])}
            for i, pid in enumerate(counts.pair_ids)]


def _extremes(pairs: list[dict], method_a: str, method_b: str, n: int) -> tuple[list, list]:
    """Up to n pairs most clearly preferred for A (share > 1/2) and for B (share < 1/2).

    Ordered by A's share (descending, resp. ascending), ties broken by the
    number of side answers behind the share. A pair at exactly 1/2 is in neither list.
    """
    def sides(p: dict) -> int:
        return p[method_a] + p[method_b]

    for_a = [p for p in pairs if p["share"] is not None and p["share"] > 0.5]
    for_b = [p for p in pairs if p["share"] is not None and p["share"] < 0.5]
    most = sorted(for_a, key=lambda p: (-p["share"], -sides(p), natural_key(p["pair_id"])))
    least = sorted(for_b, key=lambda p: (p["share"], -sides(p), natural_key(p["pair_id"])))
    return [p["pair_id"] for p in most[:n]], [p["pair_id"] for p in least[:n]]


def _per_class(counts: PairCounts, thresholds: list[float], method_a: str, method_b: str) -> list[dict]:
    """The threshold table and answer shares per class (by label, else by class name)."""
    groups: dict = defaultdict(list)
    for i in range(len(counts.pair_ids)):
        key = counts.labels[i] if counts.labels[i] is not None else counts.class_names[i]
        if key is not None:
            groups[key].append(i)
    out = []
    for key in sorted(groups, key=natural_key):
        idx = np.asarray(groups[key])
        first = int(idx[0])
        sub = PairCounts(pair_ids=[counts.pair_ids[i] for i in idx], a=counts.a[idx], b=counts.b[idx],
                         same=counts.same[idx], labels=[counts.labels[i] for i in idx],
                         class_names=[counts.class_names[i] for i in idx], seeds=[counts.seeds[i] for i in idx])
        totals = answer_totals(sub, method_a, method_b)
        out.append({"label": counts.labels[first], "class_name": counts.class_names[first],
                    "n_pairs": len(idx), "n_answers": int(sub.n.sum()),
                    "answer_counts": totals["counts"], "answer_shares": totals["shares"],
                    "thresholds": [{k: row[k] for k in ("threshold", method_a, method_b, "none", "counts")}
                                   for row in threshold_table(sub, thresholds, method_a, method_b)]})
    return out


def _validated(votes: Iterable[Vote | Mapping], method_a: str, method_b: str) -> list[Vote]:
    return votes_from_rows(votes, method_a=method_a, method_b=method_b)


def compute_all(votes: Iterable[Vote | Mapping], thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                seed: int = DEFAULT_SEED, n_boot: int = DEFAULT_N_BOOT, *, method_a: str = DEFAULT_A,
                method_b: str = DEFAULT_B, max_attention_failures: int = 0, min_side_answers: int = 10,
                fast_ms: float = DEFAULT_FAST_MS, alpha: float = 0.05, confidence: float = CONFIDENCE,
                n_extremes: int = 5, progress: Callable[[int], None] | None = None) -> dict:
    """All statistics of one study. ``votes``: :class:`Vote` objects or dict rows with the same fields.

    Raises ``ValueError`` (a :class:`~app.stats.votes.VoteFormatError` for bad
    rows) when the votes or settings cannot be used; never returns a partial result.
    """
    method_a, method_b = check_methods(method_a, method_b)
    thresholds = check_thresholds(thresholds)
    if n_boot < 0:
        raise ValueError("n_boot must be >= 0 (0 turns the bootstrap off)")
    if not (0 < confidence < 1) or not (0 < alpha < 1):
        raise ValueError("alpha and confidence must lie in (0, 1)")
    all_votes = _validated(votes, method_a, method_b)
    excl = apply_exclusions(all_votes, max_failures=max_attention_failures)
    kept = excl.kept
    if not kept:
        raise ValueError(f"no votes left to analyse ({len(all_votes)} given; exclusions: "
                         f"{excl.report['n_votes_flagged']} flagged, {excl.report['n_attention_check_votes']} "
                         f"on attention-check pairs, {excl.report['n_votes_from_excluded_raters']} from excluded "
                         "raters)")

    counts = pair_counts(kept, method_a, method_b)
    n_pairs = len(counts.pair_ids)
    table = threshold_table(counts, thresholds, method_a, method_b)
    sign_tests(table, method_a, method_b, n_pairs, alpha=alpha, confidence=confidence)
    primary_row = threshold_table(counts, [PRIMARY_THRESHOLD], method_a, method_b)
    sign_tests(primary_row, method_a, method_b, n_pairs, alpha=alpha, confidence=confidence)
    primary_row = primary_row[0]

    totals = answer_totals(counts, method_a, method_b)
    a_tot, b_tot = totals["counts"][method_a], totals["counts"][method_b]
    answer_test = exact_binomial(a_tot, a_tot + b_tot, confidence)

    raters = sorted({v.rater_id for v in kept}, key=natural_key)
    rater_index = {r: i for i, r in enumerate(raters)}
    pair_index = {p: i for i, p in enumerate(counts.pair_ids)}
    outcome_code = {method_a: 0, method_b: 1, SAME: 2}
    pair_idx = np.fromiter((pair_index[v.pair_id] for v in kept), dtype=np.int64, count=len(kept))
    rater_idx = np.fromiter((rater_index[v.rater_id] for v in kept), dtype=np.int64, count=len(kept))
    outcome = np.fromiter((outcome_code[v.choice] for v in kept), dtype=np.int64, count=len(kept))
    boot = cluster_bootstrap(pair_idx, rater_idx, outcome, n_pairs, len(raters), n_boot=n_boot, seed=seed,
                             confidence=confidence, progress=progress)
    boot_sides = boot.get("share_a_among_sides", {})
    answers_per_rater = np.bincount(rater_idx, minlength=len(raters))

    pairs = _pairs_rows(counts, method_a, method_b)
    most, least = _extremes(pairs, method_a, method_b, n_extremes)
    result = {
        "schema": SCHEMA,
        "methods": {"a": method_a, "b": method_b},
        "settings": {"thresholds": thresholds, "seed": int(seed), "n_boot": int(n_boot), "alpha": alpha,
                     "confidence": confidence, "max_attention_failures": max_attention_failures,
                     "min_side_answers": min_side_answers, "fast_ms": fast_ms},
        "versions": versions(),
        "n_pairs": n_pairs,
        "n_raters": len(raters),
        "n_answers": len(kept),
        "raters_per_pair": spread(counts.n),
        "answers_per_rater": spread(answers_per_rater),
        "pairs_without_side_answers": int(np.sum(counts.sides == 0)),
        "answer_counts": totals["counts"],
        "answer_shares": totals["shares"],
        "answer_binomial_p": answer_test["p"],
        "answer_level": {
            "share_a_among_sides": totals["share_a_among_sides"],
            "binomial": {**answer_test, "test": "exact two-sided binomial test of A versus B answers at 1/2 "
                                                "(treats answers as independent)"},
            "bootstrap": boot,
            "bootstrap_wald_p": wald_p_from_se(totals["share_a_among_sides"], boot_sides.get("se")),
        },
        "thresholds": table,
        "primary": {
            "test": PRIMARY_TEST.format(a=method_a, b=method_b),
            "threshold": PRIMARY_THRESHOLD,
            "n_a": primary_row["counts"][method_a], "n_b": primary_row["counts"][method_b],
            "n_none": primary_row["counts"]["none"],
            "share_a_among_preferred": primary_row["share_a_among_preferred"],
            "p": primary_row["sign_test_p"], "ci": primary_row["sign_test_ci"],
            "significant": None if primary_row["sign_test_p"] is None else primary_row["sign_test_p"] < alpha,
            "alpha": alpha,
            "note": "primary, pre-specified: not adjusted. The other thresholds are secondary; their Holm-adjusted "
                    "p-values are in thresholds[].sign_test_p_holm. Answer-level tests are supporting evidence.",
        },
        "agreement": agreement(counts.a, counts.b, counts.same),
        "position_bias": position_bias(kept, method_a, method_b, min_side_answers=min_side_answers),
        "response_time": response_times(kept, method_a, method_b, fast_ms=fast_ms),
        "exclusions": excl.report,
        "per_class": _per_class(counts, thresholds, method_a, method_b),
        "most_preferred": most,
        "least_preferred": least,
        "pairs": pairs,
    }
    return jsonable(result)
