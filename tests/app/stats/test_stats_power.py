"""Power and sample size: hand calculations, ICC estimation and the direction of every effect."""
from __future__ import annotations

import math

import numpy as np
import pytest

from app.stats import power as pw


def test_independent_answers_match_the_textbook_formula():
    # p1 = 0.6, alpha 0.05 two-sided, power 0.8:
    # (1.959964 * 0.5 + 0.841621 * sqrt(0.24))^2 / 0.01 = (0.979982 + 0.412308)^2 / 0.01 = 193.85
    assert pw.independent_answers_needed(0.6) == pytest.approx(193.847, abs=1e-3)
    # symmetric in p1 around 1/2 except for the sqrt(p1 q1) term, which is the same for 0.4
    assert pw.independent_answers_needed(0.4) == pytest.approx(pw.independent_answers_needed(0.6))


def test_answer_level_plan_by_hand():
    # 10 raters, no 'same', ICC 0.1: DE = 1 + 9 * 0.1 = 1.9; 193.847 * 1.9 / 10 = 36.83 -> 37 pairs
    plan = pw.answer_level_plan(0.6, 10, 0.1)
    assert plan["design_effect"] == pytest.approx(1.9)
    assert plan["n_pairs"] == 37 and plan["n_answers"] == 370
    # With a third of answers 'same', k = 20 * 2/3 side answers: DE = 1 + (40/3 - 1) * 0.1
    plan = pw.answer_level_plan(0.6, 20, 0.1, same_share=1 / 3)
    k = 20 * 2 / 3
    assert plan["design_effect"] == pytest.approx(1 + (k - 1) * 0.1)
    assert plan["n_pairs"] == math.ceil(193.8472858 * (1 + (k - 1) * 0.1) / k)


def test_more_icc_needs_more_raters_and_more_pairs():
    raters = [pw.raters_needed(0.6, 60, icc)["raters_per_pair"] for icc in (0.0, 0.05, 0.1, 0.2)]
    assert raters == sorted(raters) and raters[0] < raters[-1]
    # hand: ICC 0.1, 60 pairs: k >= 193.847 * 0.9 / (60 - 19.3847) = 4.295 -> 5 raters
    assert pw.raters_needed(0.6, 60, 0.1)["raters_per_pair"] == 5
    pairs = [pw.answer_level_plan(0.6, 25, icc)["n_pairs"] for icc in (0.0, 0.05, 0.1, 0.2)]
    assert pairs == sorted(pairs) and pairs[0] < pairs[-1]
    pair_level = [pw.pair_level_plan(0.6, 25, icc)["n_pairs"] for icc in (0.02, 0.1, 0.3)]
    assert pair_level == sorted(pair_level) and pair_level[0] < pair_level[-1]


def test_too_few_pairs_cannot_be_rescued_by_raters():
    res = pw.raters_needed(0.6, 30, 0.2)  # 30 pairs carry at most 150 independent answers; ~194 needed
    assert res["raters_per_pair"] is None and "add pairs" in res["reason"]
    assert res["max_effective_answers"] == pytest.approx(150)


def test_exact_sign_test_power_by_hand():
    # One rater per pair, ICC 0: each pair is decided, for A with probability 0.9. n = 10 pairs:
    # reject when X <= 1 or X >= 9 (P(X <= 1 | 1/2) = 11/1024 <= 0.025 < 56/1024)
    # power = 0.9^10 + 10 * 0.9^9 * 0.1 + P(X <= 1 | 0.9)
    expected = 0.9 ** 10 + 10 * 0.9 ** 9 * 0.1 + 0.1 ** 10 + 10 * 0.1 ** 9 * 0.9
    assert pw.pair_level_power(10, 0.9, 1, 0.0) == pytest.approx(expected, rel=1e-12)
    # Many raters and no ICC: every pair goes to A, and 6 pairs (p = 2/64) are the fewest that can reject
    assert pw.pair_level_plan(0.6, 1000, 0.0)["n_pairs"] == 6


def test_pair_outcome_probabilities():
    # ICC 0, 2 side answers with p = 0.6: A if both A (0.36), B if both B (0.16), tie otherwise (0.48)
    assert pw.pair_outcome_probabilities(0.6, 2, 0.0) == pytest.approx({"a": 0.36, "b": 0.16, "none": 0.48})
    # The beta-binomial with ICC -> 1 puts each pair at 0 or 1: P(A) -> p1
    probs = pw.pair_outcome_probabilities(0.6, 9, 0.999)
    assert probs["a"] == pytest.approx(0.6, abs=2e-3) and probs["none"] == 0


def test_icc_oneway_by_hand():
    # Unanimous pairs: ICC 1
    assert pw.icc_oneway(np.array([2, 0]), np.array([0, 2]))["icc"] == pytest.approx(1.0)
    # Every pair split evenly: less agreement than chance, raw -1, clipped to 0
    res = pw.icc_oneway(np.array([1, 1]), np.array([1, 1]))
    assert res["icc_raw"] == pytest.approx(-1.0) and res["icc"] == 0.0
    # (3,1), (1,1), (0,2): MSB = 0.75/2, MSW = 1.25/5, n0 = (8 - 24/8)/2 = 2.5 -> (0.375-0.25)/(0.375+1.5*0.25)
    res = pw.icc_oneway(np.array([3, 1, 0]), np.array([1, 1, 2]))
    assert (res["msb"], res["msw"], res["n0"]) == pytest.approx((0.375, 0.25, 2.5))
    assert res["icc"] == pytest.approx(1 / 6)
    assert pw.icc_oneway(np.array([3]), np.array([1]))["icc"] is None


def test_icc_recovers_a_simulated_value():
    rng = np.random.default_rng(0)
    icc, p1, k, n = 0.15, 0.55, 25, 4000
    total = 1 / icc - 1
    theta = rng.beta(p1 * total, (1 - p1) * total, size=n)
    a = rng.binomial(k, theta)
    assert pw.icc_oneway(a, k - a)["icc"] == pytest.approx(icc, abs=0.02)


def test_bad_inputs_are_refused():
    for bad in ({"p1": 0.5}, {"p1": 1.2}, {"alpha": 0}, {"power": 1.0}, {"icc": 1.0}):
        args = {"p1": 0.6, "alpha": 0.05, "power": 0.8, "icc": 0.1} | bad
        with pytest.raises(ValueError):
            pw.answer_level_plan(args["p1"], 10, args["icc"], alpha=args["alpha"], power=args["power"])
