"""Seeded synthetic studies for tests, the benchmark and report previews.

The shape follows the paper's survey (200 pairs, 19 to 36 raters per pair,
about 5,000 answers): each pair has its own true preference for A (a beta
distribution around ``share_a``), each rater a small left/right bias and an
attention level, and left/right placement is randomised per rater and pair.
Nothing here is fitted to the paper's results; it only has to be realistic
enough to exercise every statistic.
"""
from __future__ import annotations

import numpy as np

from app.stats.votes import DEFAULT_A, DEFAULT_B, SAME, Vote


def synthetic_study(*, n_pairs: int = 200, raters_min: int = 19, raters_max: int = 36, mean_raters: float = 25.09,
                    n_raters: int = 300, share_a: float = 0.555, pair_spread: float = 8.0, same_share: float = 0.27,
                    left_bias_sd: float = 0.05, attention_pairs: int = 0, careless_raters: int = 0,
                    n_classes: int = 1000, seed: int = 0, method_a: str = DEFAULT_A,
                    method_b: str = DEFAULT_B, study_id: str = "synthetic") -> list[Vote]:
    """Votes of a synthetic study; the same arguments always give the same votes.

    Raters per pair are ``raters_min + Binomial(raters_max - raters_min, q)``
    with q chosen so the mean is ``mean_raters``. ``pair_spread`` is a + b of
    the beta distribution of the pairs' true shares (smaller: pairs differ
    more, so answers within a pair agree more). ``careless_raters`` answer at
    random, fast, and fail attention checks.
    """
    if not (1 <= raters_min <= raters_max <= n_raters):
        raise ValueError("need 1 <= raters_min <= raters_max <= n_raters")
    rng = np.random.default_rng(seed)
    q = min(max((mean_raters - raters_min) / max(raters_max - raters_min, 1), 0.0), 1.0)
    m = raters_min + rng.binomial(raters_max - raters_min, q, size=n_pairs + attention_pairs)
    theta = rng.beta(share_a * pair_spread, (1 - share_a) * pair_spread, size=n_pairs)
    labels = rng.choice(n_classes, size=n_pairs + attention_pairs, replace=n_pairs + attention_pairs > n_classes)
    activity = rng.gamma(2.0, 1.0, size=n_raters)  # some raters answer many more pairs than others
    left_bias = rng.normal(0.0, left_bias_sd, size=n_raters)
    careless = np.zeros(n_raters, dtype=bool)
    careless[rng.choice(n_raters, size=careless_raters, replace=False)] = True
    positions = np.zeros(n_raters, dtype=np.int64)
    votes: list[Vote] = []
    for p in range(n_pairs + attention_pairs):
        check = p >= n_pairs
        chosen = rng.choice(n_raters, size=int(m[p]), replace=False, p=activity / activity.sum())
        for r in chosen:
            a_left = bool(rng.random() < 0.5)
            u = rng.random()
            if careless[r]:
                pick = ("left", "right", SAME)[int(u * 3)]
            elif check:
                pick = SAME if u < 0.95 else ("left" if rng.random() < 0.5 else "right")
            elif u < same_share:
                pick = SAME
            else:
                want_a = rng.random() < theta[p]
                side_a = "left" if a_left else "right"
                side = side_a if want_a else ("right" if a_left else "left")
                # A rater's side preference flips some answers towards their favourite side.
                if rng.random() < abs(left_bias[r]):
                    side = "left" if left_bias[r] > 0 else "right"
                pick = side
            if pick == SAME:
                choice = SAME
            else:
                choice = method_a if (pick == "left") == a_left else method_b
            fast = careless[r] or rng.random() < 0.02
            positions[r] += 1
            votes.append(Vote(
                pair_id=f"p{p + 1:03d}", rater_id=f"r{r + 1:03d}", choice=choice, study_id=study_id,
                label=int(labels[p]), class_name=f"class {int(labels[p])}", seed=1000 + p,
                robust_side="left" if a_left else "right", position=int(positions[r]),
                response_ms=float(round(rng.uniform(250, 900) if fast else rng.lognormal(np.log(3500), 0.5), 1)),
                created_at=None, is_attention_check=check, excluded=False))
    return votes


def votes_from_counts(counts: dict, *, method_a: str = DEFAULT_A, method_b: str = DEFAULT_B) -> list[Vote]:
    """Votes that reproduce given per-pair counts {pair_id: (r, v, s)}.

    Within a pair the answers come from raters r1, r2, ... in the order A, B,
    same, so raters are shared across pairs as in a real survey. Use it to
    recompute published figures from counts alone.
    """
    votes = []
    for pid, (r, v, s) in counts.items():
        choices = [method_a] * int(r) + [method_b] * int(v) + [SAME] * int(s)
        votes.extend(Vote(pair_id=pid, rater_id=f"r{j + 1}", choice=c) for j, c in enumerate(choices))
    return votes


def synthetic_arm_study(strengths: dict[str, float], nu: float, *, n_items: int = 40, raters_per_pair: int = 5,
                        n_raters: int = 60, arm_pairs: list[tuple[str, str]] | None = None, seed: int = 0,
                        item_sd: float = 0.0, study_id: str = "synthetic-arms") -> list[Vote]:
    """Votes of a multi-arm study drawn from the Davidson model with known strengths and tie parameter.

    ``strengths``: arm -> log-strength theta; ``nu``: the tie parameter. Every
    item (a label and seed) shows every arm pair in ``arm_pairs`` (default:
    all pairs) to ``raters_per_pair`` raters drawn at random; each pair's side
    placement is random. ``item_sd`` > 0 gives each item its own random shift
    of the strengths (items then differ, as real images do), which the
    clustered bootstrap has to absorb. The same arguments always give the same votes.
    """
    arms = list(strengths)
    if arm_pairs is None:
        arm_pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1:]]
    rng = np.random.default_rng(seed)
    theta = np.array([strengths[a] for a in arms], dtype=float)
    index = {a: i for i, a in enumerate(arms)}
    positions = np.zeros(n_raters, dtype=np.int64)
    votes: list[Vote] = []
    for item in range(n_items):
        t_item = theta + rng.normal(0.0, item_sd, size=theta.size) if item_sd > 0 else theta
        label = item % 10
        for a, b in arm_pairs:
            ta, tb = t_item[index[a]], t_item[index[b]]
            weights = np.exp([ta, tb, np.log(nu) + (ta + tb) / 2])
            probs = weights / weights.sum()
            for r in rng.choice(n_raters, size=raters_per_pair, replace=False):
                outcome = int(rng.choice(3, p=probs))
                positions[r] += 1
                votes.append(Vote(
                    pair_id=f"i{item:03d}-{a}-{b}", rater_id=f"r{r + 1:03d}",
                    choice=(a, b, SAME)[outcome], study_id=study_id, label=label, class_name=f"class {label}",
                    seed=1000 + item, robust_side="left" if rng.random() < 0.5 else "right",
                    position=int(positions[r]), response_ms=float(round(rng.lognormal(np.log(3000), 0.4), 1)),
                    arm_a=a, arm_b=b))
    return votes
