"""A synthetic study of the paper's size (200 pairs, 19 to 36 raters each, about 5,000 answers), end to end."""
from __future__ import annotations

import json

import pytest

from app.stats import compute_all, stats_json
from app.stats.report import render_report
from app.stats.synthetic import synthetic_study


@pytest.fixture(scope="module")
def study():
    votes = synthetic_study(seed=0, attention_pairs=4, careless_raters=4)
    return votes, compute_all(votes, seed=0, n_boot=2000)


def test_paper_sized_study_shape(study):
    votes, stats = study
    assert stats["n_pairs"] == 200
    assert 4500 <= stats["n_answers"] <= 5500
    rpp = stats["raters_per_pair"]
    assert 19 <= rpp["min"] and rpp["max"] <= 36 and 23 <= rpp["mean"] <= 27
    ex = stats["exclusions"]
    assert ex["n_votes_input"] == len(votes)
    assert ex["n_votes_used"] == stats["n_answers"]
    assert len(ex["attention_check_pairs"]) == 4 and ex["excluded_raters"]


def test_paper_sized_study_is_internally_consistent(study):
    _, stats = study
    a, b = "robust", "vanilla"
    assert sum(stats["answer_counts"].values()) == stats["n_answers"]
    assert sum(p["n"] for p in stats["pairs"]) == stats["n_answers"]
    for row in stats["thresholds"]:
        assert row[a] + row[b] + row["none"] == pytest.approx(1.0)
        assert sum(row["percent"].values()) == pytest.approx(100.0)
    # Preferred pairs can only become fewer as the threshold rises
    counts_a = [row["counts"][a] for row in stats["thresholds"]]
    assert counts_a == sorted(counts_a, reverse=True)
    # Each interval contains its point estimate
    level = stats["answer_level"]
    share = level["share_a_among_sides"]
    assert level["binomial"]["ci"][0] < share < level["binomial"]["ci"][1]
    boot = level["bootstrap"]
    assert boot["n_boot"] == 2000 and boot["degenerate_replicates"] == 0
    assert boot["share_a_among_sides"]["ci"][0] < share < boot["share_a_among_sides"]["ci"][1]
    for key, name in (("share_a", a), ("share_b", b), ("share_same", "same")):
        lo, hi = boot[key]["ci"]
        assert lo < stats["answer_shares"][name] < hi
    # Clustering makes the bootstrap interval wider than the one that treats answers as independent
    width = lambda ci: ci[1] - ci[0]
    assert width(boot["share_a_among_sides"]["ci"]) > width(level["binomial"]["ci"])
    # The robust method was simulated as preferred: the primary test should see it
    assert stats["primary"]["n_a"] > stats["primary"]["n_b"]
    most, least = stats["most_preferred"], stats["least_preferred"]
    shares = {p["pair_id"]: p["share"] for p in stats["pairs"]}
    assert min(shares[p] for p in most) >= max(shares[p] for p in least)


def test_paper_sized_study_serialises_and_renders(study):
    _, stats = study
    assert json.loads(stats_json(stats)) == stats
    html = render_report(stats, title="Paper-size synthetic study")
    assert html.count("<rect") >= 200 and "Most preferred for robust" in html
