"""Sign tests, Holm, the cluster bootstrap, agreement, position bias, response times and exclusions."""
from __future__ import annotations

import random

import numpy as np
import pytest

from app.stats import compute_all
from app.stats.agreement import gwet_ac1, krippendorff_alpha
from app.stats.significance import (
    clopper_pearson,
    cluster_bootstrap,
    naive_loop_bootstrap,
    sign_tests,
)
from app.stats.synthetic import synthetic_study, votes_from_counts
from app.stats.votes import Vote


def _row(threshold, n_a, n_b, n_none):
    return {"threshold": threshold, "counts": {"robust": n_a, "vanilla": n_b, "none": n_none}}


def test_sign_tests_holm_and_ties_as_half_by_hand():
    table = [_row(0.5, 10, 0, 2), _row(0.6, 8, 0, 4), _row(0.7, 5, 0, 7)]
    sign_tests(table, "robust", "vanilla", n_pairs=12)
    # All decided pairs for A: two-sided p = 2 * 0.5^n
    assert [r["sign_test_p"] for r in table] == pytest.approx([2 / 1024, 2 / 256, 2 / 32])
    # Holm: sorted p times (3, 2, 1), made monotone
    assert [r["sign_test_p_holm"] for r in table] == pytest.approx([6 / 1024, 4 / 256, 2 / 32])
    assert [r["reject_holm"] for r in table] == [True, True, False]
    # Ties as half at 50%: 10 + 1 of 12 -> p = 2 * (1 + 12) / 4096
    half = table[0]["ties_as_half"]
    assert (half["successes"], half["n"], half["dropped_ties"]) == (11, 12, 0)
    assert half["p"] == pytest.approx(26 / 4096)
    # Odd number of ties: one dropped (7 ties -> 3 each)
    assert (table[2]["ties_as_half"]["successes"], table[2]["ties_as_half"]["n"]) == (8, 11)
    assert table[2]["ties_as_half"]["dropped_ties"] == 1


def test_clopper_pearson_closed_forms():
    # x = 0: upper = 1 - (alpha/2)^(1/n); x = n: lower = (alpha/2)^(1/n)
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** 0.1)
    lo, hi = clopper_pearson(10, 10)
    assert lo == pytest.approx(0.025 ** 0.1) and hi == 1.0
    assert clopper_pearson(0, 0) == [None, None]


def test_primary_is_the_pair_level_sign_test_at_50_percent():
    votes = votes_from_counts({f"p{i}": (4, 1, 0) for i in range(9)} | {"q": (1, 4, 0), "t": (2, 2, 1)})
    stats = compute_all(votes, thresholds=[0.6, 0.7], n_boot=0)  # 50% not even in the table
    primary = stats["primary"]
    assert primary["threshold"] == 0.5 and "sign test" in primary["test"]
    assert (primary["n_a"], primary["n_b"], primary["n_none"]) == (9, 1, 1)
    assert primary["p"] == pytest.approx(2 * 11 / 1024)  # P(X <= 1) * 2 for n = 10
    assert primary["significant"] is True


def _small_study():
    return synthetic_study(n_pairs=30, raters_min=4, raters_max=9, mean_raters=6, n_raters=25, seed=5)


def _arrays(votes):
    pairs = sorted({v.pair_id for v in votes})
    raters = sorted({v.rater_id for v in votes})
    code = {"robust": 0, "vanilla": 1, "same": 2}
    return (np.array([pairs.index(v.pair_id) for v in votes]), np.array([raters.index(v.rater_id) for v in votes]),
            np.array([code[v.choice] for v in votes]), len(pairs), len(raters))


def test_vectorised_bootstrap_equals_the_plain_loop():
    p, r, y, n_p, n_r = _arrays(_small_study())
    fast = cluster_bootstrap(p, r, y, n_p, n_r, n_boot=300, seed=11)
    slow = naive_loop_bootstrap(p, r, y, n_p, n_r, n_boot=300, seed=11)
    assert fast["share_a_among_sides"]["ci"] == pytest.approx(list(np.percentile(slow, [2.5, 97.5])), rel=1e-12)
    assert fast["share_a_among_sides"]["se"] == pytest.approx(np.std(slow, ddof=1), rel=1e-12)


def test_bootstrap_is_deterministic_for_a_seed_and_changes_with_it():
    votes = _small_study()
    one = compute_all(votes, seed=7, n_boot=400)
    two = compute_all(votes, seed=7, n_boot=400)
    other = compute_all(votes, seed=8, n_boot=400)
    assert one == two
    assert one["answer_level"]["bootstrap"] != other["answer_level"]["bootstrap"]
    assert one["thresholds"] == other["thresholds"]  # only the bootstrap depends on the seed
    # ...and not on the order the votes come in
    shuffled = list(votes)
    random.Random(0).shuffle(shuffled)
    again = compute_all(shuffled, seed=7, n_boot=400)
    assert again["answer_level"]["bootstrap"]["share_a_among_sides"]["ci"] == pytest.approx(
        one["answer_level"]["bootstrap"]["share_a_among_sides"]["ci"], rel=1e-12)
    assert again["thresholds"] == one["thresholds"]


def test_bootstrap_interval_widens_when_answers_cluster_by_pair():
    # Every pair is unanimous: 20 pairs all-A, 16 all-B. 720 answers, but only 36 independent units.
    votes = votes_from_counts({f"a{i}": (20, 0, 0) for i in range(20)} | {f"b{i}": (0, 20, 0) for i in range(16)})
    stats = compute_all(votes, n_boot=2000, seed=0)
    exact_lo, exact_hi = stats["answer_level"]["binomial"]["ci"]
    boot_lo, boot_hi = stats["answer_level"]["bootstrap"]["share_a_among_sides"]["ci"]
    assert stats["answer_binomial_p"] < 0.05          # the naive answer-level test is fooled
    assert (boot_hi - boot_lo) > 3 * (exact_hi - exact_lo)
    assert boot_lo < 0.5 < boot_hi                     # the clustered interval is not
    assert stats["primary"]["p"] > 0.05               # nor is the pair-level sign test


def test_krippendorff_alpha_hand_computed():
    # units: (A,A,B), (A,B,S,S), (B,B), (S) -- the single answer is not pairable.
    # Coincidences: AA 1, BB 2, SS 2/3, AB 4/3, AS 2/3, BS 2/3; n = 9, n_A 3, n_B 4, n_S 2.
    # D_o = 2*(4/3 + 2/3 + 2/3)/9 = 16/27; D_e = 2*(12 + 6 + 8)/(9*8) = 13/18; alpha = 1 - D_o/D_e = 7/39
    counts = np.array([[2, 1, 0], [1, 1, 2], [0, 2, 0], [0, 0, 1]])
    assert krippendorff_alpha(counts) == pytest.approx(7 / 39)
    assert krippendorff_alpha(np.array([[3, 0, 0], [2, 0, 0]])) is None  # no variation: undefined


def test_gwet_ac1_hand_computed():
    # p_a = (1/2)(2/6 + 0) = 1/6 over units with >= 2 answers; pi = (7/18, 5/18, 6/18) over all three units;
    # p_e = (1/2)(7*11 + 5*13 + 6*12)/324 = 107/324; AC1 = (1/6 - 107/324) / (1 - 107/324) = -53/217
    counts = np.array([[2, 1, 0], [1, 1, 0], [0, 0, 1]])
    res = gwet_ac1(counts, n_categories=3)
    assert res["percent_agreement"] == pytest.approx(1 / 6)
    assert res["chance_agreement"] == pytest.approx(107 / 324)
    assert res["ac1"] == pytest.approx(-53 / 217)
    # Perfect agreement: AC1 = 1
    assert gwet_ac1(np.array([[3, 0, 0], [0, 4, 0], [0, 0, 2]]), n_categories=3)["ac1"] == pytest.approx(1.0)


def _v(pair, rater, choice, side=None, **kw):
    return Vote(pair_id=pair, rater_id=rater, choice=choice, robust_side=side, **kw)


def test_position_bias_left_choices_and_one_sided_raters():
    votes = []
    # r1 always picks the left image (robust when robust is left, vanilla when it is right): 12 side answers
    for i in range(12):
        side = "left" if i % 2 == 0 else "right"
        votes.append(_v(f"p{i}", "r1", "robust" if side == "left" else "vanilla", side))
    # r2 picks robust whatever the side: 6 left, 6 right; plus one 'same' that does not count
    for i in range(12):
        votes.append(_v(f"p{i}", "r2", "robust", "left" if i % 2 == 0 else "right"))
    votes.append(_v("p12", "r2", "same", "left"))
    # r3 chose left 3 times only: too few answers to be flagged
    for i in range(3):
        votes.append(_v(f"p{i}", "r3", "robust", "left"))
    pb = compute_all(votes, n_boot=0, min_side_answers=10)["position_bias"]
    assert pb["n_side_answers"] == 27
    assert pb["n_left"] == 12 + 6 + 3
    assert pb["share_left"] == pytest.approx(21 / 27)
    from scipy.stats import binomtest
    assert pb["binomial_p"] == pytest.approx(binomtest(21, 27, 0.5).pvalue)
    assert pb["raters_always_one_side"] == [{"rater_id": "r1", "side": "left", "side_answers": 12}]
    assert pb["raters_checked"] == 2


def test_position_bias_without_sides_is_reported_unavailable():
    pb = compute_all(votes_from_counts({"p": (2, 1, 0)}), n_boot=0)["position_bias"]
    assert pb["available"] is False


def test_response_time_summary():
    ms = [100, 200, 300, 400, 5000]
    votes = [Vote(pair_id="p", rater_id=f"r{i}", choice="robust" if i < 3 else "same", response_ms=t)
             for i, t in enumerate(ms)]
    rt = compute_all(votes, n_boot=0, fast_ms=250)["response_time"]
    assert (rt["median"], rt["q1"], rt["q3"], rt["iqr"]) == (300, 200, 400, 200)
    assert rt["n_fast"] == 2 and rt["raters_with_fast_answers"] == 2
    assert rt["median_by_choice"] == {"robust": 200, "vanilla": None, "same": 2700}


def test_attention_checks_exclude_failing_raters_and_the_check_pairs():
    votes = [
        _v("chk", "good", "same", is_attention_check=True),
        _v("chk", "bad", "robust", is_attention_check=True),   # picked a side on identical images
        _v("chk", "meh", "same", is_attention_check=True),
        _v("p1", "good", "robust"), _v("p1", "bad", "robust"), _v("p1", "meh", "vanilla"),
        _v("p2", "good", "vanilla"), _v("p2", "bad", "robust"), _v("p2", "meh", "vanilla", excluded=True),
    ]
    stats = compute_all(votes, n_boot=0, max_attention_failures=0)
    ex = stats["exclusions"]
    assert ex["excluded_raters"] == ["bad"]
    assert ex["attention_failures"] == [{"rater_id": "bad", "failures": 1, "checks": 1, "excluded": True}]
    assert (ex["n_votes_input"], ex["n_votes_used"]) == (9, 3)
    assert (ex["n_votes_flagged"], ex["n_attention_check_votes"], ex["n_votes_from_excluded_raters"]) == (1, 3, 2)
    assert ex["attention_check_pairs"] == ["chk"]
    assert stats["n_pairs"] == 2 and stats["n_raters"] == 2
    assert stats["answer_counts"] == {"robust": 1, "vanilla": 2, "same": 0}
    # Allowing one failure keeps "bad"
    lenient = compute_all(votes, n_boot=0, max_attention_failures=1)
    assert lenient["exclusions"]["excluded_raters"] == [] and lenient["n_answers"] == 5


def test_nothing_left_is_an_error_not_an_empty_result():
    with pytest.raises(ValueError, match="no votes left"):
        compute_all([_v("p", "r", "robust", excluded=True)], n_boot=0)


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    from app.stats.significance import holm

    rng = np.random.default_rng(1)
    # Few cases: every multipletests call runs a full gc.collect(), slow in a large test process.
    for size in (1, 4, 7):
        for _ in range(2):
            p = list(rng.uniform(0, 0.2, size=size) ** rng.uniform(0.5, 3))
            if size > 2:
                p[1] = p[0]  # ties
            reject, expected, _, _ = multipletests(p, alpha=0.05, method="holm")
            adjusted, rej = holm(p, 0.05)
            assert adjusted == pytest.approx(list(expected), rel=1e-12)
            assert rej == list(reject)
    assert holm([0.01, None, 0.04]) == ([0.02, None, 0.04], [True, None, True])
