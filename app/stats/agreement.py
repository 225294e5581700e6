"""Agreement between raters when every pair has its own (unequal) number of raters.

Both coefficients work from the pairs x categories table of counts (how many
raters chose A, B, same for each pair), which is all they need: neither uses
rater identities.

* Krippendorff's alpha (nominal), computed by the maintained ``krippendorff``
  package. Pairs with a single answer cannot show (dis)agreement and are left
  out by the coefficient itself.
* Gwet's AC1 for many raters with missing ratings (Gwet, *Handbook of
  Inter-Rater Reliability*, 4th ed., ch. 2 and 5): with r_i raters for pair i,
  r_ik of them choosing category k, q categories,

      p_a = mean over pairs with r_i >= 2 of  sum_k r_ik (r_ik - 1) / (r_i (r_i - 1))
      pi_k = mean over pairs with r_i >= 1 of  r_ik / r_i
      p_e = sum_k pi_k (1 - pi_k) / (q - 1)
      AC1 = (p_a - p_e) / (1 - p_e)

  AC1 stays interpretable when one category dominates, where alpha (like
  kappa) can be low despite high raw agreement. q is the number of answer
  options offered (3 for A / B / same, 2 for side-only agreement), not the
  number that happened to occur.
"""
from __future__ import annotations

import warnings

import numpy as np


def krippendorff_alpha(value_counts: np.ndarray) -> float | None:
    """Nominal alpha from a units x categories count matrix; None when undefined (no variation)."""
    import krippendorff

    value_counts = np.asarray(value_counts, dtype=float)
    pairable = value_counts[value_counts.sum(axis=1) >= 2]
    if pairable.shape[0] == 0:
        return None
    with warnings.catch_warnings():
        # All answers in one category: expected disagreement is 0 and alpha is 0/0.
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            value = float(krippendorff.alpha(value_counts=pairable, level_of_measurement="nominal"))
        except ValueError:
            return None
    return value if np.isfinite(value) else None


def gwet_ac1(value_counts: np.ndarray, n_categories: int | None = None) -> dict:
    """Gwet's AC1 with percent agreement and chance agreement; None values when undefined."""
    counts = np.asarray(value_counts, dtype=float)
    q = counts.shape[1] if n_categories is None else int(n_categories)
    if q < 2:
        raise ValueError("AC1 needs at least two categories")
    r = counts.sum(axis=1)
    rated = counts[r >= 1]
    multi = counts[r >= 2]
    if multi.shape[0] == 0:
        return {"ac1": None, "percent_agreement": None, "chance_agreement": None, "n_units": 0}
    r_multi = multi.sum(axis=1)
    p_a = float(np.mean((multi * (multi - 1)).sum(axis=1) / (r_multi * (r_multi - 1))))
    pi = (rated / rated.sum(axis=1, keepdims=True)).mean(axis=0)
    p_e = float(np.sum(pi * (1 - pi)) / (q - 1))
    ac1 = (p_a - p_e) / (1 - p_e) if p_e < 1 else None
    return {"ac1": ac1, "percent_agreement": p_a, "chance_agreement": p_e, "n_units": int(multi.shape[0])}


def agreement(a: np.ndarray, b: np.ndarray, same: np.ndarray) -> dict:
    """Alpha and AC1 over all three answers, and over side answers only ('same' treated as missing)."""
    three = np.stack([a, b, same], axis=1)
    sides = np.stack([a, b], axis=1)
    ac1_three = gwet_ac1(three, n_categories=3)
    ac1_sides = gwet_ac1(sides, n_categories=2)
    return {
        "krippendorff_alpha": krippendorff_alpha(three),
        "krippendorff_alpha_sides": krippendorff_alpha(sides),
        "gwet_ac1": ac1_three["ac1"],
        "gwet_ac1_sides": ac1_sides["ac1"],
        "percent_agreement": ac1_three["percent_agreement"],
        "pairs_with_two_or_more_answers": ac1_three["n_units"],
        "note": "alpha: Krippendorff, nominal, via the krippendorff package; AC1: Gwet, many raters with "
                "missing ratings. '_sides' variants ignore 'same' answers.",
    }


def majority(counts) -> int | None:
    """Index of the answer most raters of one pair gave; None for a tie at the top or no answers."""
    counts = np.asarray(counts)
    if counts.sum() == 0:
        return None
    top = np.flatnonzero(counts == counts.max())
    return int(top[0]) if len(top) == 1 else None


def between_sources(first: dict, second: dict) -> dict:
    """Agreement of two sources of answers (human and machine raters) about the same pairs.

    ``first`` and ``second`` map a pair id to its answer counts (A, B, same) from that source. Each
    source's per-pair majority answer is one rating of the pair (a pair whose top answers tie has no
    majority and is left out); the coefficients then treat the two sources as two raters:
    ``majority_agreement`` is the share of pairs whose majorities match, with Gwet's AC1 and
    Krippendorff's alpha over the same pairs-by-answers table. ``share_difference`` is the mean
    absolute difference of A's share among side answers, over pairs where both sources gave one.
    """
    common = sorted(set(first) & set(second), key=str)
    table, matches, diffs = [], 0, []
    no_majority = 0
    for pid in common:
        f, s = np.asarray(first[pid], dtype=float), np.asarray(second[pid], dtype=float)
        if f[:2].sum() and s[:2].sum():
            diffs.append(abs(f[0] / f[:2].sum() - s[0] / s[:2].sum()))
        mf, ms = majority(f), majority(s)
        if mf is None or ms is None:
            no_majority += 1
            continue
        row = np.zeros(3)
        row[mf] += 1
        row[ms] += 1
        table.append(row)
        matches += mf == ms
    n = len(table)
    counts = np.array(table).reshape(-1, 3)
    ac1 = gwet_ac1(counts, n_categories=3) if n else {"ac1": None}
    return {
        "pairs_in_both": len(common), "pairs_compared": n, "pairs_without_majority": no_majority,
        "majority_agreement": matches / n if n else None,
        "gwet_ac1": ac1["ac1"], "krippendorff_alpha": krippendorff_alpha(counts) if n else None,
        "share_difference": float(np.mean(diffs)) if diffs else None,
        "note": "each source's per-pair majority answer (A, B or same) is one rating; pairs whose top answers "
                "tie are left out",
    }
