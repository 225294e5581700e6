"""Threshold table, answer shares and totals against hand-computed cases and the paper's figures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.stats import compute_all
from app.stats.significance import exact_binomial
from app.stats.synthetic import votes_from_counts
from app.stats.tables import pair_counts, preferred, round_to_total, threshold_table

# r (robust), v (vanilla), s (same) per pair; shares for robust: 0.6, 0.5, none, 0.2, 0.7
HAND = {
    "p1": (3, 2, 0),   # exactly 60% robust
    "p2": (1, 1, 0),   # tie at 50%
    "p3": (0, 0, 3),   # nobody picked a side
    "p4": (1, 4, 0),   # exactly 80% vanilla
    "p5": (7, 3, 1),   # exactly 70% robust
}
# threshold -> (robust pairs, vanilla pairs, no preference), worked out by hand from HAND
HAND_TABLE = {
    0.5: (2, 1, 2),  # p1, p5 | p4 | p2 (tie), p3 (no sides)
    0.6: (1, 1, 3),  # p5 | p4 | p1 (at the threshold), p2, p3
    0.7: (0, 1, 4),  # - | p4 | p5 (at the threshold), p1, p2, p3
    0.8: (0, 0, 5),  # p4 is exactly at 80%: not preferred
}


def hand_stats(**kw):
    return compute_all(votes_from_counts(HAND), n_boot=0, **kw)


def test_threshold_table_matches_hand_counts():
    stats = hand_stats()
    assert [row["threshold"] for row in stats["thresholds"]] == [0.5, 0.6, 0.7, 0.8]
    for row in stats["thresholds"]:
        n_a, n_b, n_none = HAND_TABLE[row["threshold"]]
        assert row["counts"] == {"robust": n_a, "vanilla": n_b, "none": n_none}
        assert row["robust"] == pytest.approx(n_a / 5)
        assert row["vanilla"] == pytest.approx(n_b / 5)
        assert row["none"] == pytest.approx(n_none / 5)


def test_pair_exactly_at_threshold_is_not_preferred():
    a, b = np.array([3, 7, 1]), np.array([2, 3, 4])  # 60% A, 70% A, 80% B
    assert preferred(a, b, 0.6)[0].tolist() == [False, True, False]
    assert preferred(a, b, 0.7)[0].tolist() == [False, False, False]
    assert preferred(a, b, 0.8)[1].tolist() == [False, False, False]
    assert preferred(a, b, 0.79)[1].tolist() == [False, False, True]
    # Float arithmetic would get 7/10 > 0.7 right only by luck; 0.1 * 7 is 0.7000000000000001.
    assert preferred(np.array([7]), np.array([3]), 0.1 * 7)[0].tolist() == [False]


def test_ties_and_pairs_without_sides_have_no_preference_at_every_threshold():
    counts = pair_counts(votes_from_counts({"tie": (2, 2, 1), "empty": (0, 0, 4)}), "robust", "vanilla")
    for row in threshold_table(counts, [0.5, 0.6, 0.75, 1.0], "robust", "vanilla"):
        assert row["counts"] == {"robust": 0, "vanilla": 0, "none": 2}
        assert row["none"] == 1.0


def test_rows_sum_to_100_percent():
    rng = np.random.default_rng(3)
    counts = {f"p{i}": tuple(int(x) for x in rng.integers(0, 6, size=3)) for i in range(37)}
    stats = compute_all(votes_from_counts({k: v for k, v in counts.items() if sum(v)}),
                        thresholds=[0.5, 0.55, 0.6, 2 / 3, 0.7, 0.8, 0.9, 1.0], n_boot=0)
    for row in stats["thresholds"]:
        assert row["robust"] + row["vanilla"] + row["none"] == pytest.approx(1.0, abs=1e-12)
        assert sum(row["counts"].values()) == stats["n_pairs"]
        assert sum(row["percent"].values()) == pytest.approx(100.0, abs=1e-9)


def test_displayed_percentages_sum_to_100_even_when_rounding_disagrees():
    assert round_to_total([1 / 3, 1 / 3, 1 / 3]) == [33.4, 33.3, 33.3]
    assert sum(round_to_total([2 / 7, 2 / 7, 3 / 7])) == pytest.approx(100.0)
    assert round_to_total([0.615, 0.315, 0.07]) == [61.5, 31.5, 7.0]


def test_thresholds_below_one_half_are_refused():
    with pytest.raises(ValueError, match="outside"):
        hand_stats(thresholds=[0.4])


def test_answer_shares_raters_per_pair_and_totals():
    stats = hand_stats()
    assert stats["n_pairs"] == 5
    assert stats["n_answers"] == 26
    assert stats["n_raters"] == 11  # raters r1..r11 (p5 has 11 answers)
    assert stats["answer_counts"] == {"robust": 12, "vanilla": 10, "same": 4}
    assert stats["answer_shares"]["robust"] == pytest.approx(12 / 26)
    assert stats["answer_shares"]["vanilla"] == pytest.approx(10 / 26)
    assert stats["answer_shares"]["same"] == pytest.approx(4 / 26)
    assert stats["raters_per_pair"] == {"min": 2, "mean": pytest.approx(5.2), "max": 11}
    assert stats["pairs_without_side_answers"] == 1
    p3 = next(p for p in stats["pairs"] if p["pair_id"] == "p3")
    assert p3["share"] is None


def test_paper_answer_level_figures_from_counts_alone():
    """Section 5.2: 5018 answers over 200 pairs, 40.4% robust, 32.4% vanilla."""
    robust, vanilla, same = 2027, 1626, 1365
    counts = {}
    for i in range(200):
        counts[f"pair{i:03d}"] = (robust // 200 + (i < robust % 200), vanilla // 200 + (i < vanilla % 200),
                                  same // 200 + (i < same % 200))
    stats = compute_all(votes_from_counts(counts), n_boot=0)
    assert stats["n_answers"] == 5018
    assert stats["raters_per_pair"]["mean"] == pytest.approx(25.09)
    shares = stats["answer_shares"]
    assert [round(100 * shares[k], 1) for k in ("robust", "vanilla", "same")] == [40.4, 32.4, 27.2]
    assert stats["answer_binomial_p"] < 1e-10
    # The same p from the counts alone, without any votes:
    direct = exact_binomial(robust, robust + vanilla)
    assert direct["p"] == pytest.approx(stats["answer_binomial_p"], rel=1e-12)
    assert 1e-12 < direct["p"] < 1e-10  # about 3.5e-11: small, but not an artefact of underflow


def test_json_has_the_documented_keys_and_no_nan():
    stats = hand_stats()
    for key in ("n_pairs", "n_raters", "n_answers", "answer_shares", "answer_binomial_p", "thresholds"):
        assert key in stats
    assert set(stats["answer_shares"]) == {"robust", "vanilla", "same"}
    for row in stats["thresholds"]:
        assert {"threshold", "robust", "vanilla", "none", "sign_test_p"} <= set(row)
    text = json.dumps(stats, allow_nan=False)  # raises on NaN or infinity
    assert json.loads(text) == stats
    # At 80% no pair is preferred: the sign test is undefined and says so with null, not NaN.
    assert stats["thresholds"][3]["sign_test_p"] is None


def test_method_names_are_parameters():
    votes = votes_from_counts({"a": (3, 1, 0), "b": (0, 2, 2)}, method_a="cfg", method_b="plain")
    stats = compute_all(votes, n_boot=0, method_a="cfg", method_b="plain")
    assert stats["methods"] == {"a": "cfg", "b": "plain"}
    assert stats["answer_counts"] == {"cfg": 3, "plain": 3, "same": 2}
    assert stats["thresholds"][0]["counts"] == {"cfg": 1, "plain": 1, "none": 0}
    with pytest.raises(ValueError, match="unknown choice"):
        compute_all(votes, n_boot=0)  # 'cfg' is not a choice when the methods are robust/vanilla


def test_per_class_breakdown():
    from app.stats.votes import Vote

    votes = [Vote(pair_id="p1", rater_id="r1", choice="robust", label=7, class_name="seven"),
             Vote(pair_id="p1", rater_id="r2", choice="robust", label=7, class_name="seven"),
             Vote(pair_id="p2", rater_id="r1", choice="vanilla", label=7, class_name="seven"),
             Vote(pair_id="p3", rater_id="r1", choice="vanilla", label=2, class_name="two"),
             Vote(pair_id="p3", rater_id="r2", choice="same", label=2, class_name="two")]
    per_class = compute_all(votes, n_boot=0)["per_class"]
    assert [c["label"] for c in per_class] == [2, 7]
    two, seven = per_class
    assert two["n_pairs"] == 1 and two["thresholds"][0]["counts"] == {"robust": 0, "vanilla": 1, "none": 0}
    assert seven["n_pairs"] == 2 and seven["n_answers"] == 3
    assert seven["thresholds"][0]["counts"] == {"robust": 1, "vanilla": 1, "none": 0}
    assert seven["answer_shares"]["robust"] == pytest.approx(2 / 3)


def test_most_and_least_preferred_pairs():
    stats = compute_all(votes_from_counts({"a": (9, 1, 0), "b": (3, 1, 0), "c": (6, 2, 5), "d": (2, 2, 0),
                                           "e": (1, 3, 0), "f": (0, 0, 2)}), n_boot=0, n_extremes=2)
    assert stats["most_preferred"] == ["a", "c"]   # 90%, then 75% with 8 side answers before 75% with 4
    assert stats["least_preferred"] == ["e"]        # the tie "d" and the empty "f" are in neither list
