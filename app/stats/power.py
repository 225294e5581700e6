"""Planning a study: how many pairs, and how many raters per pair, to detect a preference.

Two analyses, matching the two levels of the statistics:

* **Answer level** (normal approximation to the one-sample test of a
  proportion): n0 independent side answers detect a share p1 against 1/2 with
  ``n0 = (z_{1-alpha/2} * sqrt(p0 q0) + z_{power} * sqrt(p1 q1))^2 / (p1 - p0)^2``.
  Answers about the same pair are correlated (intra-pair correlation ICC), so
  with k side answers per pair each pair is worth only k / DE independent
  answers, ``DE = 1 + (k - 1) * ICC`` (the design effect). k is the raters per
  pair times the share of answers that pick a side ("same" answers carry no
  information about the direction). With P pairs the effective sample size
  can never exceed P / ICC, however many raters each pair gets.
* **Pair level** (the primary sign test at 50%): each pair's true share is
  drawn from a beta distribution with mean p1 and intra-pair correlation ICC
  (beta-binomial: ICC = 1 / (a + b + 1)); with k side answers, a pair is
  preferred for A when more than k/2 of them pick A. That gives the chance a
  pair is decided and the split of decided pairs; the power of the exact sign
  test is then summed exactly over the binomial number of decided pairs.

The ICC is estimated from a pilot's votes by the one-way ANOVA estimator with
pairs as groups and "picked A" (0/1) among side answers as the outcome, with
n0 the usual size correction for unequal group sizes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import betabinom, binom, norm

from app.stats.tables import PairCounts


def icc_oneway(a: np.ndarray, b: np.ndarray) -> dict:
    """ANOVA estimate of the intra-pair correlation of 'picked A' among side answers.

    ``a``/``b``: side answers for A/B per pair. Pairs without side answers are
    left out. The raw estimate can be negative (less agreement than chance);
    ``icc`` is it clipped at 0 for planning.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    n_i = a + b
    keep = n_i > 0
    a, n_i = a[keep], n_i[keep]
    g, n = int(keep.sum()), float(n_i.sum())
    if g < 2 or n <= g:
        return {"icc": None, "icc_raw": None, "n_pairs": g, "n_answers": int(n),
                "reason": "needs at least two pairs with side answers and more answers than pairs"}
    grand = a.sum() / n
    ssb = float(np.sum(n_i * (a / n_i - grand) ** 2))
    ssw = float(np.sum(a - a ** 2 / n_i))  # 0/1 outcomes: sum of squares within a pair is a - a^2/n
    msb, msw = ssb / (g - 1), ssw / (n - g)
    n0 = (n - float(np.sum(n_i ** 2)) / n) / (g - 1)
    denom = msb + (n0 - 1) * msw
    raw = (msb - msw) / denom if denom > 0 else None
    return {"icc": None if raw is None else max(0.0, raw), "icc_raw": raw, "n_pairs": g, "n_answers": int(n),
            "msb": msb, "msw": msw, "n0": n0}


def pilot_summary(counts: PairCounts) -> dict:
    """What a pilot tells the planner: ICC, A's share among side answers, the share of 'same' answers."""
    a, b, s = counts.a.sum(), counts.b.sum(), counts.same.sum()
    return {**icc_oneway(counts.a, counts.b),
            "share_a_among_sides": float(a / (a + b)) if a + b else None,
            "same_share": float(s / (a + b + s)) if a + b + s else None,
            "mean_raters_per_pair": float(counts.n.mean()) if len(counts.pair_ids) else None}


def _check(p1: float, alpha: float, power: float, icc: float, same_share: float = 0.0) -> None:
    if not (0 < p1 < 1) or p1 == 0.5:
        raise ValueError(f"share {p1!r}: give a preference share in (0, 1) other than 0.5")
    if not (0 < alpha < 1):
        raise ValueError(f"alpha {alpha!r} must be in (0, 1)")
    if not (0 < power < 1):
        raise ValueError(f"power {power!r} must be in (0, 1)")
    if not (0 <= icc < 1):
        raise ValueError(f"ICC {icc!r} must be in [0, 1)")
    if not (0 <= same_share < 1):
        raise ValueError(f"same share {same_share!r} must be in [0, 1)")


def independent_answers_needed(p1: float, *, alpha: float = 0.05, power: float = 0.8, p0: float = 0.5) -> float:
    """n0: independent side answers for a two-sided test of p1 against p0 (normal approximation)."""
    _check(p1, alpha, power, 0.0)
    z_a, z_b = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return (z_a * math.sqrt(p0 * (1 - p0)) + z_b * math.sqrt(p1 * (1 - p1))) ** 2 / (p1 - p0) ** 2


def design_effect(side_answers_per_pair: float, icc: float) -> float:
    return 1.0 + (side_answers_per_pair - 1.0) * icc


def answer_level_plan(p1: float, raters_per_pair: int, icc: float, *, alpha: float = 0.05, power: float = 0.8,
                      same_share: float = 0.0) -> dict:
    """Pairs needed at the answer level for a given number of raters per pair."""
    _check(p1, alpha, power, icc, same_share)
    if raters_per_pair < 1:
        raise ValueError("raters per pair must be >= 1")
    n0 = independent_answers_needed(p1, alpha=alpha, power=power)
    k = raters_per_pair * (1 - same_share)
    de = design_effect(k, icc)
    n_pairs = max(1, math.ceil(n0 * de / k - 1e-9))
    return {"raters_per_pair": int(raters_per_pair), "side_answers_per_pair": k, "design_effect": de,
            "independent_answers_needed": n0, "side_answers_needed": n0 * de,
            "n_pairs": n_pairs, "n_answers": n_pairs * int(raters_per_pair)}


def raters_needed(p1: float, n_pairs: int, icc: float, *, alpha: float = 0.05, power: float = 0.8,
                  same_share: float = 0.0) -> dict:
    """Raters per pair needed at the answer level with a fixed number of pairs (None if no number suffices)."""
    _check(p1, alpha, power, icc, same_share)
    if n_pairs < 1:
        raise ValueError("pairs must be >= 1")
    n0 = independent_answers_needed(p1, alpha=alpha, power=power)
    # n_pairs * k / (1 + (k-1) icc) >= n0  <=>  k (n_pairs - n0 icc) >= n0 (1 - icc)
    spare = n_pairs - n0 * icc
    limit = n_pairs / icc if icc > 0 else None
    if spare <= 0:
        return {"raters_per_pair": None, "independent_answers_needed": n0, "max_effective_answers": limit,
                "reason": f"{n_pairs} pairs carry at most {limit:.1f} independent answers at ICC {icc:g}; "
                          f"{n0:.1f} are needed, so add pairs"}
    k = n0 * (1 - icc) / spare
    m = max(1, math.ceil(k / (1 - same_share) - 1e-9))
    return {"raters_per_pair": m, "independent_answers_needed": n0, "max_effective_answers": limit,
            "design_effect": design_effect(m * (1 - same_share), icc)}


def _sign_test_power_by_n(n_max: int, pi: float, alpha: float) -> np.ndarray:
    """Exact power of the two-sided sign test at 1/2 for D = 0..n_max decided pairs with true share pi."""
    d = np.arange(n_max + 1)
    # Largest c with P(X <= c | 1/2) <= alpha/2: reject when X <= c or X >= D - c.
    c = binom.ppf(alpha / 2, d, 0.5)
    c = np.where(binom.cdf(c, d, 0.5) > alpha / 2 * (1 + 1e-12), c - 1, c)
    lower = np.where(c >= 0, binom.cdf(c, d, pi), 0.0)
    upper = np.where(c >= 0, binom.sf(d - c - 1, d, pi), 0.0)
    return np.where(d > 0, lower + upper, 0.0)


def pair_outcome_probabilities(p1: float, side_answers_per_pair: int, icc: float) -> dict:
    """Chance that a pair is preferred for A / for B / neither at 50%, under the beta-binomial model."""
    k = int(side_answers_per_pair)
    if k < 1:
        raise ValueError("side answers per pair must be >= 1")
    r = np.arange(k + 1)
    if icc == 0:
        pmf = binom.pmf(r, k, p1)
    else:
        total = 1.0 / icc - 1.0
        pmf = betabinom.pmf(r, k, p1 * total, (1 - p1) * total)
    pmf = pmf / pmf.sum()  # so that the three add up to 1 despite rounding, and mixing weights stay <= 1
    return {"a": float(pmf[2 * r > k].sum()), "b": float(pmf[2 * r < k].sum()), "none": float(pmf[2 * r == k].sum())}


def pair_level_power(n_pairs: int, p1: float, side_answers_per_pair: int, icc: float, *,
                     alpha: float = 0.05) -> float:
    probs = pair_outcome_probabilities(p1, side_answers_per_pair, icc)
    decided = min(1.0, probs["a"] + probs["b"])
    if decided == 0:
        return 0.0
    pi = probs["a"] / decided
    by_d = _sign_test_power_by_n(n_pairs, pi, alpha)
    return float(np.sum(binom.pmf(np.arange(n_pairs + 1), n_pairs, decided) * by_d))


def pair_level_plan(p1: float, raters_per_pair: int, icc: float, *, alpha: float = 0.05, power: float = 0.8,
                    same_share: float = 0.0, max_pairs: int = 100_000) -> dict:
    """Smallest number of pairs whose sign test at 50% reaches ``power``.

    Exact binomial power saw-tooths in n (less so here, where the number of
    decided pairs is itself random). The search doubles n until the target is
    reached, then scans the last interval one by one, so it returns the first
    n of that interval that reaches the target, as G*Power does, rather than
    a larger n past every dip.
    """
    _check(p1, alpha, power, icc, same_share)
    k = max(1, round(raters_per_pair * (1 - same_share)))
    probs = pair_outcome_probabilities(p1, k, icc)
    decided = probs["a"] + probs["b"]
    base = {"raters_per_pair": int(raters_per_pair), "side_answers_per_pair": k, "pair_probabilities": probs}
    if decided == 0 or probs["a"] == probs["b"]:
        return {**base, "n_pairs": None, "power": None,
                "reason": "under these settings pairs are not decided for A more often than for B"}

    def reaches(n: int) -> bool:
        return pair_level_power(n, p1, k, icc, alpha=alpha) >= power

    lo, hi = 0, 1
    while not reaches(hi):
        if hi >= max_pairs:
            return {**base, "n_pairs": None, "power": None, "reason": f"more than {max_pairs} pairs needed"}
        lo, hi = hi, min(2 * hi, max_pairs)
    n = next(m for m in range(lo + 1, hi + 1) if reaches(m))
    return {**base, "n_pairs": n, "power": pair_level_power(n, p1, k, icc, alpha=alpha),
            "share_a_among_decided_pairs": probs["a"] / decided, "decided_share": decided}


def planning_table(p1: float, icc: float, *, raters: Sequence[int] = (5, 10, 15, 20, 25, 30, 40),
                   alpha: float = 0.05, power: float = 0.8, same_share: float = 0.0) -> list[dict]:
    """For each candidate raters-per-pair: pairs needed at the answer level and at the pair level."""
    rows = []
    for m in raters:
        ans = answer_level_plan(p1, m, icc, alpha=alpha, power=power, same_share=same_share)
        pair = pair_level_plan(p1, m, icc, alpha=alpha, power=power, same_share=same_share)
        rows.append({"raters_per_pair": m, "design_effect": ans["design_effect"],
                     "pairs_answer_level": ans["n_pairs"], "answers_answer_level": ans["n_answers"],
                     "pairs_pair_level": pair["n_pairs"], "pair_level_power": pair["power"],
                     "pair_probabilities": pair["pair_probabilities"]})
    return rows
