"""A ranking of K arms with ties: the Davidson (1970) extension of Bradley-Terry, and its clustered bootstrap.

Each answer about a pair of arms (i, j) is "i", "j" or "same". Davidson's
model gives arm i a log-strength theta_i and the comparison a tie parameter
nu > 0:

    P(i) = pi_i / D,  P(j) = pi_j / D,  P(same) = nu sqrt(pi_i pi_j) / D,
    D = pi_i + pi_j + nu sqrt(pi_i pi_j),  pi = exp(theta).

Written on the log scale it is a multinomial logit whose three linear
predictors are (theta_i, theta_j, log nu + (theta_i + theta_j) / 2), so the
log-likelihood is concave and Newton's method with the exact Hessian
converges in a handful of steps. It is fitted here, vectorised over
bootstrap replicates, because none of the packages we compared fits it the
way a study needs (docs/statistics.md, "Ranking"): ``choix`` has no tie
model, ``evalica`` counts a tie as half a win (no tie parameter), and
``leaderbot``'s Davidson model is right but imports numba, scikit-learn and
plotting packages at import and has no weighted (bootstrap) fit. The tests
check the fit against ``scipy.optimize.minimize`` on the same likelihood.

Identification: theta is fitted with the first arm at 0 and reported
centred (mean 0 over the arms), so an arm's strength is its position
against the average arm.

Intervals come from a two-way cluster bootstrap, the same "pigeonhole"
scheme as the answer-level bootstrap of :mod:`app.stats.significance`: each
replicate resamples the items (a label and seed, whose images of all arms
share their noise) and, independently, the raters, with replacement, and
weights an answer by the product of its item's and its rater's
multiplicities. A replicate in which the maximum-likelihood estimate does
not exist (an arm that never loses, or no "same" at all) is left out and
counted.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from app.stats.significance import CONFIDENCE

MODEL = "davidson"
MODEL_NAME = ("Davidson (1970) Bradley-Terry model with ties: P(i over j) = pi_i / D, P(same) = nu sqrt(pi_i pi_j) "
              "/ D, D = pi_i + pi_j + nu sqrt(pi_i pi_j); maximum likelihood (Newton, exact Hessian)")
BOOTSTRAP = ("two-way cluster bootstrap resampling items (label and seed) and raters, percentile intervals; "
             "replicates whose estimate does not exist are left out")
OUTCOMES = 3  # first arm chosen, second arm chosen, same
# A replicate whose estimate runs past this (|log-strength| or |log nu|) has no finite MLE.
_DIVERGED = 12.0
_MAX_ITER = 60
_TOL = 1e-10
_BOOT_CHUNK = 250


def design_tensor(arm_pairs: Sequence[tuple[int, int]], k: int) -> np.ndarray:
    """(M, 3, K) matrix mapping (theta_1..theta_{K-1}, log nu) to the three logits of each arm pair."""
    m = len(arm_pairs)
    d = np.zeros((m, OUTCOMES, k + 1))
    for row, (i, j) in enumerate(arm_pairs):
        d[row, 0, i] = 1.0
        d[row, 1, j] = 1.0
        d[row, 2, i] += 0.5
        d[row, 2, j] += 0.5
        d[row, 2, k] = 1.0
    return d[:, :, 1:]  # theta_0 = 0


def _loglik(counts: np.ndarray, logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=-1, keepdims=True)
    lse = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return np.einsum("bmc,bmc->b", counts, logits) - np.einsum("bm,bm->b", counts.sum(axis=-1), lse)


def fit_batch(counts: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood parameters for B count tables at once.

    ``counts``: (B, M, 3) weighted answers per arm pair (first arm, second arm,
    same); ``design``: from :func:`design_tensor`. Returns (B, K) parameters
    (theta_1..theta_{K-1}, log nu) and a (B,) mask of replicates whose
    estimate exists (converged and finite).
    """
    counts = np.asarray(counts, dtype=float)
    b, _, _ = counts.shape
    p = design.shape[-1]
    x = np.zeros((b, p))
    x[:, -1] = np.log(np.maximum(counts[..., 2].sum(axis=1), 0.5) /
                      np.maximum(counts[..., :2].sum(axis=(1, 2)) / 2, 0.5))
    n = counts.sum(axis=-1)
    current = _loglik(counts, np.einsum("mcp,bp->bmc", design, x))
    done = np.zeros(b, dtype=bool)
    eye = np.eye(p) * 1e-12
    for _ in range(_MAX_ITER):
        logits = np.einsum("mcp,bp->bmc", design, x)
        prob = np.exp(logits - logits.max(axis=-1, keepdims=True))
        prob /= prob.sum(axis=-1, keepdims=True)
        grad = np.einsum("mcp,bmc->bp", design, counts - n[..., None] * prob)
        w = n[..., None, None] * (np.einsum("bmc,cd->bmcd", prob, np.eye(OUTCOMES))
                                  - prob[..., :, None] * prob[..., None, :])
        hess = np.einsum("mcp,bmcd,mdq->bpq", design, w, design) + eye
        try:
            step = np.linalg.solve(hess, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess.reshape(-1, p), grad.reshape(-1), rcond=None)[0].reshape(b, p) \
                if b == 1 else np.stack([np.linalg.lstsq(h, g, rcond=None)[0] for h, g in zip(hess, grad)])
        step[done] = 0.0
        # Step halving keeps every replicate's likelihood from going down.
        t = np.ones(b)
        for _half in range(30):
            trial = x + t[:, None] * step
            value = _loglik(counts, np.einsum("mcp,bp->bmc", design, trial))
            worse = value < current - 1e-12 * np.abs(current)
            if not worse.any():
                break
            t[worse] /= 2
        x = x + t[:, None] * step
        new = _loglik(counts, np.einsum("mcp,bp->bmc", design, x))
        done |= (np.abs(new - current) <= _TOL * (1 + np.abs(new))) & (np.abs(step).max(axis=1) < 1e-6)
        current = new
        if done.all() or (np.abs(x) > 3 * _DIVERGED).any(axis=1).all():
            break
    ok = done & (np.abs(x).max(axis=1) < _DIVERGED) & np.isfinite(x).all(axis=1)
    return x, ok


def _centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    theta = np.concatenate([np.zeros((x.shape[0], 1)), x[:, :-1]], axis=1)
    return theta - theta.mean(axis=1, keepdims=True), x[:, -1]


def outcome_probabilities(theta: np.ndarray, log_nu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(…, K, K) P(i chosen over j) and P(same) for every ordered pair of arms."""
    ti, tj = theta[..., :, None], theta[..., None, :]
    tie = np.asarray(log_nu)[..., None, None] + (ti + tj) / 2
    top = np.maximum(np.maximum(ti, tj), tie)
    ei, ej, et = np.exp(ti - top), np.exp(tj - top), np.exp(tie - top)
    total = ei + ej + et
    return ei / total, et / total


def _intervals(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    lo, hi = np.percentile(values, [lo_q, hi_q], axis=0)
    return lo, hi, values.std(axis=0, ddof=1)


def pigeonhole_weights(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``size`` rows of how often each of n clusters is drawn in n draws with replacement."""
    draws = rng.integers(0, n, size=(size, n))
    flat = draws + (np.arange(size) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def fit_ranking(arms: Sequence[str], arm_pair: np.ndarray, outcome: np.ndarray, item: np.ndarray,
                rater: np.ndarray, *, n_boot: int = 1000, seed: int = 0, confidence: float = CONFIDENCE,
                progress: Callable[[int], None] | None = None) -> dict:
    """Fit the Davidson model to answers and bootstrap it.

    One entry per answer: ``arm_pair`` (A, 2) the arm indices shown (first,
    second), ``outcome`` 0 (first chosen), 1 (second chosen) or 2 (same),
    ``item`` and ``rater`` cluster indices (0-based). Returns plain data
    (numpy arrays) that :func:`ranking_json` turns into the report's entry.
    """
    k = len(arms)
    if k < 2:
        raise ValueError("a ranking needs at least two arms")
    arm_pair = np.asarray(arm_pair, dtype=np.int64).reshape(-1, 2)
    outcome = np.asarray(outcome, dtype=np.int64)
    if arm_pair.shape[0] != outcome.size or outcome.size == 0:
        raise ValueError("give one arm pair per answer, and at least one answer")
    # Every ordered pair that occurs, in a canonical (i < j) orientation.
    lo, hi = arm_pair.min(axis=1), arm_pair.max(axis=1)
    flipped = arm_pair[:, 0] > arm_pair[:, 1]
    out = outcome.copy()
    out[flipped & (outcome == 0)] = 1
    out[flipped & (outcome == 1)] = 0
    keys = sorted(set(zip(lo.tolist(), hi.tolist())))
    pair_index = {key: m for m, key in enumerate(keys)}
    col = np.fromiter((pair_index[(a, b)] * OUTCOMES for a, b in zip(lo, hi)), dtype=np.int64,
                      count=out.size) + out
    design = design_tensor(keys, k)
    onehot = np.zeros((out.size, len(keys) * OUTCOMES))
    onehot[np.arange(out.size), col] = 1.0
    table = onehot.sum(axis=0).reshape(1, len(keys), OUTCOMES)
    x, ok = fit_batch(table, design)
    theta, log_nu = _centred(x)
    connected = _connected(keys, k)
    result = {"arms": list(arms), "arm_pairs": keys, "counts": table[0], "theta": theta[0],
              "log_nu": float(log_nu[0]), "exists": bool(ok[0]) and connected, "connected": connected,
              "n_answers": int(out.size), "boot": None}
    if n_boot <= 0 or not result["exists"]:
        return result
    item = np.asarray(item, dtype=np.int64)
    rater = np.asarray(rater, dtype=np.int64)
    n_items, n_raters = int(item.max()) + 1, int(rater.max()) + 1
    rng = np.random.default_rng(seed)
    thetas, log_nus, oks = [], [], []
    done = 0
    while done < n_boot:
        size = min(_BOOT_CHUNK, n_boot - done)
        w = pigeonhole_weights(rng, size, n_items)[:, item] * pigeonhole_weights(rng, size, n_raters)[:, rater]
        tables = (w @ onehot).reshape(size, len(keys), OUTCOMES)
        xb, okb = fit_batch(tables, design)
        tb, nb = _centred(xb)
        thetas.append(tb)
        log_nus.append(nb)
        oks.append(okb)
        done += size
        if progress is not None:
            progress(size)
    theta_b, log_nu_b, ok_b = np.concatenate(thetas), np.concatenate(log_nus), np.concatenate(oks)
    result["boot"] = {"theta": theta_b[ok_b], "log_nu": log_nu_b[ok_b], "n_boot": int(n_boot),
                      "degenerate": int((~ok_b).sum()), "seed": int(seed), "confidence": confidence}
    return result


def _connected(keys: list[tuple[int, int]], k: int) -> bool:
    """Whether the arm pairs shown link every arm (else strengths of separate groups are not comparable)."""
    parent = list(range(k))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in keys:
        parent[find(a)] = find(b)
    return len({find(a) for a in range(k)}) == 1


def ranking_json(fit: dict, confidence: float = CONFIDENCE) -> dict:
    """The ranking as plain data: strengths with intervals, the tie parameter, P(i beats j), P(i ranked above j)."""
    arms = fit["arms"]
    k = len(arms)
    counts = fit["counts"]
    per_arm = {a: {"wins": 0, "losses": 0, "same": 0} for a in arms}
    for (i, j), row in zip(fit["arm_pairs"], counts):
        per_arm[arms[i]]["wins"] += int(row[0])
        per_arm[arms[i]]["losses"] += int(row[1])
        per_arm[arms[j]]["wins"] += int(row[1])
        per_arm[arms[j]]["losses"] += int(row[0])
        per_arm[arms[i]]["same"] += int(row[2])
        per_arm[arms[j]]["same"] += int(row[2])
    out = {
        "model": MODEL, "model_name": MODEL_NAME, "scale": "log-strength theta, centred to mean 0 over the arms",
        "n_answers": fit["n_answers"], "exists": fit["exists"], "connected": fit["connected"],
        "arm_pairs": [{"arms": [arms[i], arms[j]], "first": int(r[0]), "second": int(r[1]), "same": int(r[2])}
                      for (i, j), r in zip(fit["arm_pairs"], counts)],
    }
    if not fit["exists"]:
        out["reason"] = ("the arm pairs shown do not connect every arm" if not fit["connected"] else
                         "the maximum-likelihood estimate does not exist (an arm that never loses or never wins, "
                         "or no 'same' answers, or only 'same' answers)")
        out["arms"] = [{"arm": a, **per_arm[a], "theta": None, "ci": [None, None], "se": None, "rank": None}
                       for a in arms]
        out["tie"] = {"nu": None, "log_nu": None, "ci": [None, None]}
        out["win_probability"] = out["tie_probability"] = out["p_above"] = None
        out["bootstrap"] = None
        return out
    theta = fit["theta"]
    win, tie = outcome_probabilities(theta, fit["log_nu"])
    boot = fit["boot"]
    usable = boot is not None and boot["theta"].shape[0] >= 2
    if usable:
        t_lo, t_hi, t_se = _intervals(boot["theta"], confidence)
        n_lo, n_hi, n_se = _intervals(boot["log_nu"][:, None], confidence)
        win_b, _ = outcome_probabilities(boot["theta"], boot["log_nu"])
        w_lo, w_hi, _ = _intervals(win_b, confidence)
        above = (boot["theta"][:, :, None] > boot["theta"][:, None, :]).mean(axis=0)
    order = np.argsort(-theta, kind="stable")
    rank = np.empty(k, dtype=int)
    rank[order] = np.arange(1, k + 1)
    out["arms"] = [{"arm": arms[i], **per_arm[arms[i]], "theta": float(theta[i]),
                    "ci": [float(t_lo[i]), float(t_hi[i])] if usable else [None, None],
                    "se": float(t_se[i]) if usable else None, "rank": int(rank[i])} for i in range(k)]
    out["order"] = [arms[i] for i in order]
    out["tie"] = {"nu": float(np.exp(fit["log_nu"])), "log_nu": float(fit["log_nu"]),
                  "ci": [float(np.exp(n_lo[0])), float(np.exp(n_hi[0]))] if usable else [None, None],
                  "se_log_nu": float(n_se[0]) if usable else None}

    def matrix(values, lo=None, hi=None):
        rows = {}
        for i in range(k):
            rows[arms[i]] = {}
            for j in range(k):
                if i == j:
                    continue
                cell = {"p": float(values[i, j])}
                if lo is not None:
                    cell["ci"] = [float(lo[i, j]), float(hi[i, j])]
                rows[arms[i]][arms[j]] = cell
        return rows

    out["win_probability"] = matrix(win, *(w_lo, w_hi) if usable else (None, None))
    out["tie_probability"] = matrix(tie)
    out["p_above"] = ({arms[i]: {arms[j]: float(above[i, j]) for j in range(k) if j != i} for i in range(k)}
                      if usable else None)
    out["bootstrap"] = (None if boot is None else
                        {"method": BOOTSTRAP, "n_boot": boot["n_boot"], "seed": boot["seed"],
                         "degenerate_replicates": boot["degenerate"], "confidence": confidence})
    return out
