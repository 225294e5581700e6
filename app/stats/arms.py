"""Statistics of a study with more than two arms: every arm pair as a two-arm study, and a ranking of all arms.

Votes of a multi-arm study name the two arms of their pair (``Vote.arm_a``,
``Vote.arm_b``; ``choice`` is one of them or "same"). Exclusions (flags,
attention checks, careless raters) are applied to the study as a whole, as
for two arms; then

* each arm pair that was shown gets exactly what :func:`compute_all` gives a
  two-arm study (threshold table, sign tests with Holm across thresholds,
  answer shares and their bootstrap, agreement, position bias, ...), with the
  pair's first arm as method A;
* the sign tests of all arm pairs and thresholds are adjusted together by
  Holm (``holm_all``), and the primary tests (50%) across arm pairs
  (``primary_holm``): with K arms a study makes K(K-1)/2 comparisons;
* the Davidson model ranks all arms with a tie parameter, with intervals from
  a bootstrap that resamples items (label and seed) and raters
  (:mod:`app.stats.ranking`).

A two-arm study keeps :func:`compute_all`'s output unchanged; this module is
for K >= 3 (and for K = 2 when asked, e.g. to rank two arms).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from app.stats.exclusions import apply_exclusions
from app.stats.ranking import fit_ranking, ranking_json
from app.stats.significance import CONFIDENCE, holm
from app.stats.summary import DEFAULT_N_BOOT, DEFAULT_SEED, compute_all, jsonable, versions
from app.stats.tables import DEFAULT_THRESHOLDS, check_thresholds, natural_key
from app.stats.timing import DEFAULT_FAST_MS
from app.stats.votes import SAME, Vote, VoteFormatError, votes_from_rows

SCHEMA = "rguide.stats.arms/1"


def is_multi_arm(votes: Sequence[Vote]) -> bool:
    return any(v.arm_a is not None for v in votes)


def study_arms(votes: Sequence[Vote], arms: Sequence[str] | None = None) -> list[str]:
    """The arms in the study's order (given, else in order of first appearance)."""
    seen: list[str] = []
    for v in votes:
        if v.arm_a is None:
            raise VoteFormatError(f"vote of rater {v.rater_id!r} on pair {v.pair_id!r} names no arms; in a "
                                  "multi-arm file every vote names arm_a and arm_b", column="arm_a")
        for name in (v.arm_a, v.arm_b):
            if name not in seen:
                seen.append(name)
    if arms is None:
        return seen
    order = [str(a).strip().lower() for a in arms]
    unknown = [a for a in seen if a not in order]
    if unknown:
        raise ValueError(f"votes name arm {unknown[0]!r}, which is not one of the study's arms "
                         f"({', '.join(order)})")
    return order


def _oriented(v: Vote, index: dict[str, int]) -> Vote:
    """The vote with its pair's arms in the study's order (the side of arm_a flips with them)."""
    if index[v.arm_a] < index[v.arm_b]:
        return v
    side = {"left": "right", "right": "left"}.get(v.robust_side) if v.robust_side else None
    return replace(v, arm_a=v.arm_b, arm_b=v.arm_a, robust_side=side)


def item_key(v: Vote):
    """The unit whose images of every arm share their noise: the label and seed, else the pair."""
    if v.seed is not None:
        return ("seed", v.label, v.class_name, v.seed)
    return ("pair", v.pair_id)


def rank_votes(votes: Sequence[Vote], order: Sequence[str], *, n_boot: int, seed: int,
               confidence: float = CONFIDENCE, progress: Callable[[int], None] | None = None) -> dict:
    """The Davidson fit of votes already excluded and oriented (see :func:`compute_arms`), not yet as JSON."""
    index = {a: i for i, a in enumerate(order)}
    # A canonical order, so that sums (and so the last digits of every number) do not depend on the input's.
    votes = sorted(votes, key=lambda v: (natural_key(str(item_key(v))), natural_key(v.rater_id),
                                         natural_key(v.pair_id)))
    items = sorted({item_key(v) for v in votes}, key=lambda k: natural_key(str(k)))
    item_index = {k: i for i, k in enumerate(items)}
    raters = sorted({v.rater_id for v in votes}, key=natural_key)
    rater_index = {r: i for i, r in enumerate(raters)}
    outcome = np.fromiter((2 if v.choice == SAME else int(v.choice == v.arm_b) for v in votes), dtype=np.int64,
                          count=len(votes))
    return fit_ranking(list(order), np.array([(index[v.arm_a], index[v.arm_b]) for v in votes]), outcome,
                       np.array([item_index[item_key(v)] for v in votes]),
                       np.array([rater_index[v.rater_id] for v in votes]),
                       n_boot=n_boot, seed=seed, confidence=confidence, progress=progress)


def oriented_votes(votes: Iterable[Vote | Mapping], arms: Sequence[str] | None = None, *,
                   max_attention_failures: int = 0) -> tuple[list[str], list[Vote], dict]:
    """(arm order, the votes that enter the statistics with their arms in that order, the exclusion report)."""
    all_votes = votes_from_rows(votes)
    order = study_arms(all_votes, arms)
    index = {a: i for i, a in enumerate(order)}
    excl = apply_exclusions(all_votes, max_failures=max_attention_failures)
    return order, [_oriented(v, index) for v in excl.kept], excl.report


def compute_arms(votes: Iterable[Vote | Mapping], thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 seed: int = DEFAULT_SEED, n_boot: int = DEFAULT_N_BOOT, *, arms: Sequence[str] | None = None,
                 max_attention_failures: int = 0, min_side_answers: int = 10, fast_ms: float = DEFAULT_FAST_MS,
                 alpha: float = 0.05, confidence: float = CONFIDENCE, n_boot_ranking: int | None = None,
                 progress: Callable[[int], None] | None = None) -> dict:
    """All statistics of a multi-arm study as one JSON-ready dict (schema ``rguide.stats.arms/1``)."""
    thresholds = check_thresholds(thresholds)
    if n_boot < 0:
        raise ValueError("n_boot must be >= 0 (0 turns the bootstrap off)")
    if not (0 < confidence < 1) or not (0 < alpha < 1):
        raise ValueError("alpha and confidence must lie in (0, 1)")
    order, kept, excl_report = oriented_votes(votes, arms, max_attention_failures=max_attention_failures)
    index = {a: i for i, a in enumerate(order)}
    if not kept:
        raise ValueError("no votes left to analyse after the exclusions")

    groups: dict[tuple[str, str], list[Vote]] = {}
    for v in kept:
        groups.setdefault((v.arm_a, v.arm_b), []).append(v)
    arm_pairs = sorted(groups, key=lambda p: (index[p[0]], index[p[1]]))
    per_pair = []
    for a, b in arm_pairs:
        # Exclusions were made over the whole study; what is left is clean for compute_all.
        sub = [replace(v, arm_a=None, arm_b=None) for v in groups[(a, b)]]
        stats = compute_all(sub, thresholds, seed, n_boot, method_a=a, method_b=b,
                            max_attention_failures=max_attention_failures, min_side_answers=min_side_answers,
                            fast_ms=fast_ms, alpha=alpha, confidence=confidence)
        for drop in ("schema", "versions", "settings", "exclusions"):
            stats.pop(drop, None)
        per_pair.append({"arms": [a, b], **stats})

    # Holm over the whole family: every (arm pair, threshold) sign test, and the primaries across arm pairs.
    family = [(k, t) for k in range(len(per_pair)) for t in range(len(thresholds))]
    adjusted, reject = holm([per_pair[k]["thresholds"][t]["sign_test_p"] for k, t in family], alpha)
    for (k, t), p_adj, rej in zip(family, adjusted, reject):
        per_pair[k]["thresholds"][t]["sign_test_p_holm_all"] = p_adj
        per_pair[k]["thresholds"][t]["reject_holm_all"] = rej
    adjusted, reject = holm([p["primary"]["p"] for p in per_pair], alpha)
    for p, p_adj, rej in zip(per_pair, adjusted, reject):
        p["primary"]["p_holm_arm_pairs"] = p_adj
        p["primary"]["significant_holm_arm_pairs"] = rej

    fit = rank_votes(kept, order, n_boot=n_boot if n_boot_ranking is None else n_boot_ranking, seed=seed,
                     confidence=confidence, progress=progress)
    items = {item_key(v) for v in kept}
    raters = {v.rater_id for v in kept}
    shown = {tuple(p) for p in arm_pairs}
    result = {
        "schema": SCHEMA,
        "arms": order,
        "arm_pairs_shown": [list(p) for p in arm_pairs],
        "arm_pairs_not_shown": [[a, b] for i, a in enumerate(order) for b in order[i + 1:] if (a, b) not in shown],
        "settings": {"thresholds": thresholds, "seed": int(seed), "n_boot": int(n_boot),
                     "n_boot_ranking": int(n_boot if n_boot_ranking is None else n_boot_ranking), "alpha": alpha,
                     "confidence": confidence, "max_attention_failures": max_attention_failures,
                     "min_side_answers": min_side_answers, "fast_ms": fast_ms},
        "versions": versions(),
        "n_items": len(items),
        "n_pairs": len({v.pair_id for v in kept}),
        "n_raters": len(raters),
        "n_answers": len(kept),
        "multiplicity": {
            "n_tests_all": len(family),
            "n_arm_pairs": len(per_pair),
            "holm_all": "thresholds[].sign_test_p_holm_all: Holm across every arm pair and threshold "
                        f"({len(family)} tests)",
            "primary_holm_arm_pairs": "primary.p_holm_arm_pairs: the 50% sign tests, Holm across the "
                                      f"{len(per_pair)} arm pairs",
            "within_pair": "thresholds[].sign_test_p_holm: Holm across the thresholds of one arm pair, as for a "
                           "two-arm study",
        },
        "exclusions": excl_report,
        "ranking": ranking_json(fit, confidence),
        "arm_pairs": per_pair,
    }
    return jsonable(result)
