"""Significance with the pair as the unit, plus answer-level tests that respect clustering.

* Primary: the exact two-sided sign test at the 50% threshold: among pairs
  preferred for one method, is the split between A and B different from 1/2?
  Each pair counts once however many raters it had, so raters who answered
  many pairs, or pairs with many raters, cannot inflate the evidence.
* The same test at every threshold, with Holm's step-down correction across
  the thresholds (they are several looks at the same data); checked against
  statsmodels' ``multipletests`` in the tests.
* A sensitivity version counting "no preference" pairs as half a win for
  each side (ties split evenly; with an odd number of ties one is dropped,
  the usual conservative convention for a sign test with ties).
* Answer level: the exact binomial test of A versus B answers. It treats
  every answer as independent, which they are not (answers about the same
  pair, and by the same rater, are correlated), so it comes with a two-way
  cluster bootstrap interval that resamples pairs and raters.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import binomtest, norm

CONFIDENCE = 0.95
PRIMARY_THRESHOLD = 0.5
PRIMARY_TEST = ("exact two-sided sign test over pairs at the 50% threshold: pairs preferred for {a} versus pairs "
                "preferred for {b}, binomial at 1/2, no-preference pairs left out")
# Fixed so that results depend only on (seed, n_boot), never on how work is split.
_BOOT_CHUNK = 250


def exact_binomial(successes: int, n: int, confidence: float = CONFIDENCE) -> dict:
    """Two-sided exact binomial test at 1/2 with a Clopper-Pearson interval; nulls when n == 0."""
    if n == 0:
        return {"successes": 0, "n": 0, "share": None, "p": None, "ci": [None, None]}
    res = binomtest(int(successes), int(n), 0.5, alternative="two-sided")
    ci = res.proportion_ci(confidence_level=confidence, method="exact")
    return {"successes": int(successes), "n": int(n), "share": successes / n, "p": float(res.pvalue),
            "ci": [float(ci.low), float(ci.high)]}


def clopper_pearson(successes: int, n: int, confidence: float = CONFIDENCE) -> list:
    if n == 0:
        return [None, None]
    ci = binomtest(int(successes), int(n), 0.5).proportion_ci(confidence_level=confidence, method="exact")
    return [float(ci.low), float(ci.high)]


def holm(pvalues: list, alpha: float = 0.05) -> tuple[list, list]:
    """Holm step-down adjusted p-values and rejections; undefined (None) p-values stay None and do not count.

    Written out rather than calling statsmodels' ``multipletests(method="holm")``
    (which the tests use as the reference): that function runs a full
    ``gc.collect()`` on every call, 0.1-0.3 s inside a large process such as
    the API server, for what is a sort and a running maximum.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted: list = [None] * len(pvalues)
    reject: list = [None] * len(pvalues)
    if idx:
        p = np.asarray([pvalues[i] for i in idx], dtype=float)
        m = p.size
        order = np.argsort(p, kind="stable")
        stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(m, 0, -1)))
        padj = np.empty(m)
        padj[order] = stepped
        for j, i in enumerate(idx):
            adjusted[i] = float(padj[j])
            reject[i] = bool(padj[j] <= alpha)
    return adjusted, reject


def sign_tests(table: list[dict], method_a: str, method_b: str, n_pairs: int, *, alpha: float = 0.05,
               confidence: float = CONFIDENCE) -> None:
    """Add sign tests (raw and Holm-adjusted), Clopper-Pearson intervals and the ties-as-half
    sensitivity test to each row of a threshold table, in place."""
    pvals = []
    for row in table:
        n_a, n_b, n_none = row["counts"][method_a], row["counts"][method_b], row["counts"]["none"]
        test = exact_binomial(n_a, n_a + n_b, confidence)
        row["n_preferred"] = n_a + n_b
        row["share_a_among_preferred"] = test["share"]
        row["sign_test_p"] = test["p"]
        row["sign_test_ci"] = test["ci"]
        # Intervals for the table's own cells: the share of all pairs preferred for each method.
        row["ci"] = {method_a: clopper_pearson(n_a, n_pairs, confidence),
                     method_b: clopper_pearson(n_b, n_pairs, confidence),
                     "none": clopper_pearson(n_none, n_pairs, confidence)}
        half = n_none // 2
        ties = exact_binomial(n_a + half, n_a + n_b + 2 * half, confidence)
        row["ties_as_half"] = {"successes": ties["successes"], "n": ties["n"], "dropped_ties": n_none % 2,
                               "share": ties["share"], "p": ties["p"], "ci": ties["ci"]}
        pvals.append(test["p"])
    adjusted, reject = holm(pvals, alpha)
    for row, p_adj, rej in zip(table, adjusted, reject):
        row["sign_test_p_holm"] = p_adj
        row["reject_holm"] = rej


def wald_p_from_se(estimate: float | None, se: float | None) -> float | None:
    """Two-sided normal p-value for H0: share = 1/2 using a (bootstrap) standard error."""
    if estimate is None or se is None or not np.isfinite(se) or se <= 0:
        return None
    z = (estimate - 0.5) / se
    return float(2 * norm.sf(abs(z)))


def cluster_bootstrap(pair_idx: np.ndarray, rater_idx: np.ndarray, outcome: np.ndarray, n_pairs: int,
                      n_raters: int, *, n_boot: int, seed: int, confidence: float = CONFIDENCE,
                      progress: Callable[[int], None] | None = None) -> dict:
    """Two-way (pairs x raters) cluster bootstrap of the answer shares.

    Each replicate draws n_pairs pairs and, independently, n_raters raters with
    replacement; an answer by rater j about pair i then enters with weight
    (times i was drawn) x (times j was drawn). This is the "pigeonhole"
    bootstrap for crossed random effects (Owen 2007): it keeps both the
    within-pair and the within-rater correlation in the resampled data, and
    errs on the conservative side. Replicates are computed in fixed-size
    chunks as one gather and one matrix product each, never a Python loop over
    answers.

    ``outcome`` holds 0 (A), 1 (B) or 2 (same) per answer. Returns the
    percentile intervals and standard errors of the A, B and same shares and
    of A's share among side answers.
    """
    if n_boot <= 0 or outcome.size == 0:
        return {"n_boot": int(max(n_boot, 0)), "seed": int(seed), "method": "none"}
    rng = np.random.default_rng(seed)
    onehot = np.zeros((outcome.size, 3))
    onehot[np.arange(outcome.size), outcome] = 1.0
    totals = np.empty((n_boot, 3))
    done = 0
    while done < n_boot:
        size = min(_BOOT_CHUNK, n_boot - done)
        w_pair = _multiplicities(rng, size, n_pairs)
        w_rater = _multiplicities(rng, size, n_raters)
        weights = w_pair[:, pair_idx] * w_rater[:, rater_idx]
        totals[done:done + size] = weights @ onehot
        done += size
        if progress is not None:
            progress(size)
    all_answers = totals.sum(axis=1)
    sides = totals[:, 0] + totals[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = totals / all_answers[:, None]
        share_sides = totals[:, 0] / sides
    # A replicate can draw no rater who answered a drawn pair; its share is undefined, not 0.
    degenerate = int(np.sum(all_answers == 0))
    lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2

    def summary(values: np.ndarray) -> dict:
        values = values[np.isfinite(values)]
        if values.size < 2:
            return {"ci": [None, None], "se": None}
        lo, hi = np.percentile(values, [lo_q, hi_q])
        return {"ci": [float(lo), float(hi)], "se": float(values.std(ddof=1))}

    return {
        "method": "two-way cluster bootstrap (resampling pairs and raters), percentile intervals",
        "n_boot": int(n_boot), "seed": int(seed), "confidence": confidence,
        "degenerate_replicates": degenerate,
        "share_a": summary(shares[:, 0]), "share_b": summary(shares[:, 1]), "share_same": summary(shares[:, 2]),
        "share_a_among_sides": summary(share_sides),
    }


def _multiplicities(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``size`` rows of how often each of n units is drawn in n draws with replacement."""
    draws = rng.integers(0, n, size=(size, n))
    flat = draws + (np.arange(size) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def naive_loop_bootstrap(pair_idx: np.ndarray, rater_idx: np.ndarray, outcome: np.ndarray, n_pairs: int,
                         n_raters: int, *, n_boot: int, seed: int) -> np.ndarray:
    """The same two-way bootstrap written as a plain loop (the benchmark's baseline and a test oracle).

    Returns A's share among side answers per replicate, using the same random
    draws as :func:`cluster_bootstrap` for the same seed, so the two must agree.
    """
    rng = np.random.default_rng(seed)
    out = []
    done = 0
    while done < n_boot:
        size = min(_BOOT_CHUNK, n_boot - done)
        w_pair = _multiplicities(rng, size, n_pairs)
        w_rater = _multiplicities(rng, size, n_raters)
        for b in range(size):
            wa = wb = 0.0
            for k in range(outcome.size):
                w = w_pair[b, pair_idx[k]] * w_rater[b, rater_idx[k]]
                if outcome[k] == 0:
                    wa += w
                elif outcome[k] == 1:
                    wb += w
            out.append(wa / (wa + wb) if wa + wb else np.nan)
        done += size
    return np.asarray(out)
