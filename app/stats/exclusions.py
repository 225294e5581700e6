"""Which votes enter the statistics: flagged votes, attention checks, careless raters.

An attention-check vote fails when its ``attention_passed`` is false; without
that field (the classic check: the same image twice, so the correct answer is
"same"), a rater who picks a side on it fails the check. In order:

1. votes flagged ``excluded`` (by the survey or the researcher) are dropped;
2. failures are counted per rater on the remaining attention-check votes;
3. raters with more than ``max_failures`` failures are dropped entirely;
4. attention-check pairs never enter the statistics (their answer is known).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from app.stats.tables import natural_key
from app.stats.votes import SAME, Vote

FLAGGED = "flagged"
ATTENTION_CHECK = "attention_check_pair"
FAILED_RATER = "rater_failed_attention_checks"
RULE_SAME = ("flagged votes dropped; raters with more than max_attention_failures side answers on "
             "attention-check pairs (correct answer: same) dropped; attention-check pairs never counted")
RULE_GIVEN = ("flagged votes dropped; raters with more than max_attention_failures failed attention checks "
              "(as recorded with each vote) dropped; attention-check pairs never counted")


@dataclass(frozen=True)
class Exclusions:
    kept: list[Vote]
    reasons: list[str | None]  # per input vote, None when kept
    report: dict


def apply_exclusions(votes: Sequence[Vote], *, max_failures: int = 0) -> Exclusions:
    if max_failures < 0:
        raise ValueError("max_failures must be >= 0")
    failures: Counter = Counter()
    checks_answered: Counter = Counter()
    for vote in votes:
        if vote.is_attention_check and not vote.excluded:
            checks_answered[vote.rater_id] += 1
            passed = vote.attention_passed if vote.attention_passed is not None else vote.choice == SAME
            if not passed:
                failures[vote.rater_id] += 1
    dropped_raters = {r for r, n in failures.items() if n > max_failures}
    reasons: list[str | None] = []
    for vote in votes:
        if vote.excluded:
            reasons.append(FLAGGED)
        elif vote.is_attention_check:
            reasons.append(ATTENTION_CHECK)
        elif vote.rater_id in dropped_raters:
            reasons.append(FAILED_RATER)
        else:
            reasons.append(None)
    kept = [v for v, why in zip(votes, reasons) if why is None]
    by_reason = Counter(why for why in reasons if why is not None)
    report = {
        "n_votes_input": len(votes),
        "n_votes_used": len(kept),
        "n_votes_flagged": by_reason[FLAGGED],
        "n_attention_check_votes": by_reason[ATTENTION_CHECK],
        "n_votes_from_excluded_raters": by_reason[FAILED_RATER],
        "attention_check_pairs": sorted({v.pair_id for v in votes if v.is_attention_check}, key=natural_key),
        "max_attention_failures": max_failures,
        "raters_with_attention_checks": len(checks_answered),
        "attention_failures": [{"rater_id": r, "failures": failures[r], "checks": checks_answered[r],
                                "excluded": r in dropped_raters}
                               for r in sorted(failures, key=natural_key)],
        "excluded_raters": sorted(dropped_raters, key=natural_key),
        "rule": RULE_GIVEN if any(v.attention_passed is not None for v in votes) else RULE_SAME,
    }
    return Exclusions(kept=kept, reasons=reasons, report=report)
