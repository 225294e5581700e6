"""Machine votes' statistics and their agreement with human answers: pure functions on hand-computed cases."""
from __future__ import annotations

import pytest

from app.stats import Vote
from app.stats.agreement import between_sources, majority
from app.stats.machine import LIMITS, pair_answer_counts, statistics


def test_majority_is_the_strict_top_answer():
    assert majority([3, 1, 0]) == 0 and majority([0, 0, 2]) == 2
    assert majority([2, 2, 1]) is None and majority([0, 0, 0]) is None


def test_agreement_between_sources_hand_computed():
    # Majorities, human vs machine: p1 A/A, p2 A/B, p3 B/B, p4 same/same; p5 ties for the humans (left out).
    human = {"p1": (3, 1, 0), "p2": (2, 1, 0), "p3": (0, 3, 1), "p4": (1, 0, 4), "p5": (2, 2, 0)}
    machine = {"p1": (5, 0, 0), "p2": (1, 4, 0), "p3": (1, 3, 1), "p4": (0, 1, 4), "p5": (5, 0, 0), "p6": (5, 0, 0)}
    got = between_sources(human, machine)
    assert got["pairs_in_both"] == 5 and got["pairs_compared"] == 4 and got["pairs_without_majority"] == 1
    assert got["majority_agreement"] == pytest.approx(3 / 4)
    # AC1 with two ratings per pair: p_a = 3/4; pi = (A .375, B .375, same .25);
    # p_e = (2 * .375 * .625 + .25 * .75) / 2 = .328125; AC1 = (.75 - .328125) / (1 - .328125).
    assert got["gwet_ac1"] == pytest.approx((0.75 - 0.328125) / (1 - 0.328125))
    # Krippendorff, nominal: coincidences A-A 2, A-B 1+1, B-B 2, same-same 2 (n = 8; n_A = n_B = 3, n_same = 2):
    # D_o = 2/8, D_e = 2 (9 + 6 + 6) / (8 * 7) = 3/4, alpha = 1 - (1/4) / (3/4) = 2/3.
    assert got["krippendorff_alpha"] == pytest.approx(2 / 3)
    # A's share of side answers: |3/4-1| + |2/3-1/5| + |0-1/4| + |1-0| + |1/2-1|, over the 5 pairs in both.
    assert got["share_difference"] == pytest.approx((0.25 + (2 / 3 - 0.2) + 0.25 + 1 + 0.5) / 5)


def test_agreement_of_sources_that_never_meet_is_empty_not_an_error():
    got = between_sources({"p1": (1, 0, 0)}, {"p2": (1, 0, 0)})
    assert got["pairs_compared"] == 0 and got["majority_agreement"] is None and got["gwet_ac1"] is None


def _votes(answers: dict[str, list[str]], arms=None) -> list[Vote]:
    return [Vote(pair_id=p, rater_id=f"machine-{j + 1:02d}", choice=c, robust_side="left" if j % 2 else "right",
                 **({"arm_a": arms[0], "arm_b": arms[1]} if arms else {}))
            for p, choices in answers.items() for j, c in enumerate(choices)]


def test_pair_answer_counts_orient_to_the_pairs_arm_a():
    votes = _votes({"p1": ["robust", "robust", "same"], "p2": ["vanilla", "same"]})
    assert pair_answer_counts(votes, "robust") == {"p1": (2, 0, 1), "p2": (0, 1, 1)}
    arms = _votes({"q": ["x", "y", "y"]}, arms=("y", "x"))
    assert pair_answer_counts(arms) == {"q": (2, 1, 0)}


def test_machine_statistics_are_the_survey_statistics_labelled_a_proxy():
    from app.stats.summary import compute_all

    answers = {f"p{i}": ["robust", "robust", "vanilla"] if i % 3 else ["vanilla", "same", "robust"]
               for i in range(12)}
    votes = _votes(answers)
    got = statistics(votes, method_a="robust", method_b="vanilla", n_boot=0, provenance={"preset": "demo"})
    assert got["limits"] == list(LIMITS) and got["stats"]["machine_pilot"] == {"preset": "demo"}
    plain = compute_all(votes, n_boot=0, method_a="robust", method_b="vanilla")
    assert got["stats"]["thresholds"] == plain["thresholds"] and got["stats"]["primary"] == plain["primary"]
    assert got["power"]["pilot"]["share_a_among_sides"] == pytest.approx(20 / 32)  # robust 8 x 2 + 4, vanilla 8 + 4
    assert got["power"]["plans"][0]["raters_per_pair"] == 5
