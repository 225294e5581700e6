"""Left/right position bias: do raters pick the left image more than half the time?

Needs ``robust_side`` (the side on which method A was shown). A side answer
"chose left" when it chose A shown on the left or B shown on the right.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from app.stats.significance import exact_binomial
from app.stats.tables import natural_key
from app.stats.votes import Vote


def position_bias(votes: Sequence[Vote], method_a: str, method_b: str, *, min_side_answers: int = 10) -> dict:
    with_side = [v for v in votes if v.robust_side is not None]
    side_answers = [v for v in with_side if v.choice in (method_a, method_b)]
    if not side_answers:
        return {"available": False, "reason": "no side answers with robust_side recorded",
                "n_votes_with_side": len(with_side)}
    per_rater: dict = defaultdict(lambda: [0, 0])  # [left, right]
    left = 0
    for v in side_answers:
        chose_left = (v.choice == method_a) == (v.robust_side == "left")
        left += chose_left
        per_rater[v.rater_id][0 if chose_left else 1] += 1
    test = exact_binomial(left, len(side_answers))
    one_sided = []
    for rater in sorted(per_rater, key=natural_key):
        n_left, n_right = per_rater[rater]
        if n_left + n_right >= min_side_answers and (n_left == 0 or n_right == 0):
            one_sided.append({"rater_id": rater, "side": "left" if n_right == 0 else "right",
                              "side_answers": n_left + n_right})
    a_left = sum(v.robust_side == "left" for v in with_side)
    return {
        "available": True,
        "n_side_answers": len(side_answers),
        "n_left": left,
        "share_left": test["share"],
        "binomial_p": test["p"],
        "ci": test["ci"],
        "min_side_answers": min_side_answers,
        "raters_checked": sum(1 for n in per_rater.values() if sum(n) >= min_side_answers),
        "raters_always_one_side": one_sided,
        # Randomisation check: how often method A was the left image.
        "share_a_shown_left": a_left / len(with_side),
        "n_votes_with_side": len(with_side),
    }
