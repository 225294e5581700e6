"""Planning a multi-arm study: how many items (seeds) and raters to rank K arms to a given interval width.

The Davidson model's Fisher information per answer about arm pair (i, j) is
``D' (diag p - p p') D`` with D the pair's three linear predictors (see
:mod:`app.stats.ranking`). A design (``model_core.designs``) with N items and
m raters per shown pair gives each arm pair shown n_ij = m x (items showing
it) answers, so the model-based covariance of the centred log-strengths is
the inverse of the summed information, mapped to the centred scale.

Answers about one item (and by one rater) are correlated, which the model
ignores and the clustered bootstrap does not. A pilot measures how much: its
design effect is the bootstrap variance over the model variance, averaged
over the arms, and it is carried to other numbers of raters per pair as
``DE(m) = 1 + (m - 1) rho`` with ``rho = (DE_pilot - 1) / (m_pilot - 1)``
(rho clipped at 0), measured with a bootstrap over items alone. The
report's two-way (items and raters) bootstrap is conservative: it counts the
answer-level noise twice, so a pilot also gives ``report_factor``, its
variance over the items-only one, and the plan is for the intervals the
report will show. The planned half-width of arm i's interval is
``z * sqrt(report_factor * DE(m) * Var_i)``; the plan is the smallest N whose
widest arm meets the target.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from app.stats.ranking import OUTCOMES, design_tensor
from model_core.designs import DESIGNS, item_pairs


def _check(k: int, design: str, width: float, confidence: float) -> None:
    if k < 2:
        raise ValueError("a ranking needs at least two arms")
    if design not in DESIGNS:
        raise ValueError(f"design {design!r} is unknown; choose from {', '.join(DESIGNS)}")
    if not width > 0:
        raise ValueError("the interval half-width must be positive")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")


def answers_per_arm_pair(n_items: int, raters_per_pair: int, k: int, design: str, *, reference: int = 0,
                         pairs_per_item: int | None = None) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for pairs in item_pairs(n_items, k, design, reference=reference, pairs_per_item=pairs_per_item):
        for pair in pairs:
            counts[pair] = counts.get(pair, 0) + raters_per_pair
    return counts


def centred_covariance(theta: Sequence[float], log_nu: float, answers: dict[tuple[int, int], float]) -> np.ndarray:
    """Model-based covariance (K x K) of the centred log-strengths for the given answers per arm pair."""
    theta = np.asarray(theta, dtype=float)
    k = theta.size
    keys = sorted(answers)
    design = design_tensor(keys, k)  # (M, 3, K): theta_1..theta_{K-1}, log nu
    x = np.concatenate([theta[1:] - theta[0], [log_nu]])
    logits = np.einsum("mcp,p->mc", design, x)
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    n = np.array([answers[key] for key in keys], dtype=float)
    w = n[:, None, None] * (np.einsum("mc,cd->mcd", prob, np.eye(OUTCOMES)) - prob[:, :, None] * prob[:, None, :])
    info = np.einsum("mcp,mcd,mdq->pq", design, w, design)
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return np.full((k, k), np.inf)
    # theta (with theta_0 = 0) -> centred: C @ J, J puts the free strengths in place.
    jac = np.zeros((k, k))
    jac[1:, :k - 1] = np.eye(k - 1)
    centre = np.eye(k) - 1.0 / k
    m = centre @ jac
    return m @ cov @ m.T


def half_widths(theta, log_nu, n_items: int, raters_per_pair: int, design: str, *, rho: float = 0.0,
                reference: int = 0, pairs_per_item: int | None = None, confidence: float = 0.95,
                report_factor: float = 1.0) -> np.ndarray:
    k = len(theta)
    answers = answers_per_arm_pair(n_items, raters_per_pair, k, design, reference=reference,
                                   pairs_per_item=pairs_per_item)
    cov = centred_covariance(theta, log_nu, answers)
    de = (1.0 + (raters_per_pair - 1) * max(rho, 0.0)) * report_factor
    return norm.ppf(0.5 + confidence / 2) * np.sqrt(np.maximum(np.diag(cov), 0.0) * de)


def plan_ranking(theta: Sequence[float], log_nu: float, *, width: float, design: str = "all_pairs",
                 raters: Sequence[int] = (3, 5, 10, 15, 20), rho: float = 0.0, reference: int = 0,
                 pairs_per_item: int | None = None, confidence: float = 0.95, report_factor: float = 1.0,
                 max_items: int = 100_000) -> list[dict]:
    """For each raters-per-pair value, the fewest items whose widest arm interval has half-width <= width."""
    k = len(theta)
    _check(k, design, width, confidence)
    rows = []
    for m in raters:
        if m < 1:
            raise ValueError("raters per pair must be >= 1")

        def widest(n: int, m: int = m) -> float:
            return float(half_widths(theta, log_nu, n, m, design, rho=rho, reference=reference,
                                     pairs_per_item=pairs_per_item, confidence=confidence,
                                     report_factor=report_factor).max())

        # Incomplete designs need enough items for every arm pair to come up.
        lo, hi = 0, 1
        while not widest(hi) <= width:
            if hi >= max_items:
                hi = None
                break
            lo, hi = hi, min(2 * hi, max_items)
        if hi is None:
            rows.append({"raters_per_pair": int(m), "n_items": None, "reason": f"more than {max_items} items"})
            continue
        while hi - lo > 1:  # the widest half-width only shrinks as items are added (up to design rounding)
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if widest(mid) <= width else (mid, hi)
        pairs_shown = sum(len(p) for p in item_pairs(hi, k, design, reference=reference, pairs_per_item=pairs_per_item))
        rows.append({"raters_per_pair": int(m), "n_items": hi, "pairs": pairs_shown, "answers": pairs_shown * int(m),
                     "design_effect": (1.0 + (m - 1) * max(rho, 0.0)) * report_factor,
                     "widest_half_width": widest(hi)})
    return rows


def pilot_design_effect(fit_items: dict, fit_report: dict, exists: bool, raters_per_pair: float) -> dict:
    """What a pilot tells the planner: its strengths and tie parameter, and how clustered its answers are.

    ``fit_items``: the fit bootstrapped over items alone (all raters one cluster); its variance over the
    model's is the design effect of answers about one item, carried to other m as 1 + (m-1) rho.
    ``fit_report``: the fit with the report's two-way (items and raters) bootstrap, which is
    conservative; ``report_factor`` (its variance over the items-only one) scales the plan to the
    intervals the report will show.
    """
    if not exists or fit_items.get("boot") is None or fit_report.get("boot") is None:
        return {"available": False, "reason": "the pilot's ranking has no estimate or no bootstrap"}
    answers = {key: float(row.sum()) for key, row in zip(fit_items["arm_pairs"], fit_items["counts"])}
    model = np.diag(centred_covariance(fit_items["theta"], fit_items["log_nu"], answers))
    items = fit_items["boot"]["theta"].var(axis=0, ddof=1)
    report = fit_report["boot"]["theta"].var(axis=0, ddof=1)
    de = float(np.mean(items / model))
    rho = max(0.0, (de - 1) / (raters_per_pair - 1)) if raters_per_pair > 1 else 0.0
    return {"available": True, "design_effect": de, "rho": rho, "raters_per_pair": float(raters_per_pair),
            "report_factor": max(1.0, float(np.mean(report / items))),
            "theta": [float(t) for t in fit_items["theta"]], "nu": float(math.exp(fit_items["log_nu"])),
            "model_se": np.sqrt(model).tolist(), "items_bootstrap_se": np.sqrt(items).tolist(),
            "report_bootstrap_se": np.sqrt(report).tolist()}
