"""Multi-arm files through ``rguide stats`` and ``rguide power``, the arms report, and planning K arms."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.stats import compute_all, write_votes_csv
from app.stats.arms import compute_arms
from app.stats.arms_report import arms_table2_csv, forest_plot_png, render_arms_report
from app.stats.power_arms import answers_per_arm_pair, centred_covariance, half_widths, plan_ranking
from app.stats.report import render_report
from app.stats.synthetic import synthetic_arm_study, synthetic_study
from rguide.cli import main

TRUTH = {"robust": 0.4, "vanilla": 0.0, "unguided": -0.6}


@pytest.fixture
def arms_csv(tmp_path):
    path = tmp_path / "arms.csv"
    write_votes_csv(path, synthetic_arm_study(TRUTH, 0.8, n_items=25, seed=4))
    return path


def test_rguide_stats_on_a_multi_arm_file_writes_every_output(arms_csv, tmp_path, capsys):
    out, html, png, table = (tmp_path / n for n in ("s.json", "r.html", "f.png", "t.csv"))
    assert main(["stats", str(arms_csv), "--bootstrap", "100", "--out", str(out), "--html", str(html),
                 "--forest-png", str(png), "--table2-csv", str(table), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Ranking (davidson)" in text and "1. robust" in text
    stats = json.loads(out.read_text())
    assert stats["schema"] == "rguide.stats.arms/1" and stats["input"]["n_votes"] == 25 * 3 * 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'id="forest-plot"' in html.read_text() and "data:image/png;base64," in html.read_text()
    assert table.read_text().splitlines()[0].startswith("arm_a,arm_b,threshold_percent")
    assert len(table.read_text().splitlines()) == 1 + 3 * 4


def test_rguide_stats_refuses_two_arm_only_options_on_multi_arm_files_and_the_reverse(arms_csv, tmp_path):
    assert main(["stats", str(arms_csv), "--table2-tex", str(tmp_path / "t.tex"), "--no-progress"]) == 2
    two = tmp_path / "two.csv"
    write_votes_csv(two, synthetic_study(n_pairs=5, raters_min=3, raters_max=4, n_raters=10))
    assert main(["stats", str(two), "--forest-png", str(tmp_path / "f.png"), "--no-progress"]) == 2
    assert main(["stats", str(arms_csv), "--arms", "robust,vanilla", "--no-progress"]) == 2  # unguided left out
    assert not (tmp_path / "f.png").exists()


def test_model_covariance_matches_the_spread_of_fits_on_simulated_data():
    theta, nu = np.array(list(TRUTH.values())), 0.8
    centred = theta - theta.mean()
    answers = answers_per_arm_pair(40, 5, 3, "all_pairs")
    assert answers == {(0, 1): 200, (0, 2): 200, (1, 2): 200}
    cov = centred_covariance(centred, math.log(nu), answers)
    assert np.allclose(cov.sum(axis=0), 0.0, atol=1e-12)  # centred strengths sum to 0
    # Answers drawn from the model itself, fitted 1000 times at once.
    from app.stats.ranking import _centred, design_tensor, fit_batch, outcome_probabilities

    win, tie = outcome_probabilities(centred, math.log(nu))
    rng = np.random.default_rng(0)
    keys = sorted(answers)
    tables = np.stack([rng.multinomial(answers[(i, j)], [win[i, j], win[j, i], tie[i, j]], size=1000)
                       for i, j in keys], axis=1)
    x, ok = fit_batch(tables, design_tensor(keys, 3))
    assert ok.all()
    empirical = np.var(_centred(x)[0], axis=0, ddof=1)
    assert np.allclose(empirical, np.diag(cov), rtol=0.15), (empirical, np.diag(cov))


def test_plans_shrink_with_raters_and_grow_with_clustering_and_narrower_targets():
    theta, log_nu = [0.4, 0.0, -0.6], math.log(0.8)
    base = plan_ranking(theta, log_nu, width=0.25, raters=(3, 10))
    assert base[0]["n_items"] > base[1]["n_items"]
    narrower = plan_ranking(theta, log_nu, width=0.15, raters=(3, 10))
    assert all(n["n_items"] > b["n_items"] for n, b in zip(narrower, base))
    clustered = plan_ranking(theta, log_nu, width=0.25, raters=(3, 10), rho=0.2)
    assert all(c["n_items"] >= b["n_items"] for c, b in zip(clustered, base))
    for row in base:  # the plan is the first number of items that meets the target
        m, n = row["raters_per_pair"], row["n_items"]
        assert half_widths(theta, log_nu, n, m, "all_pairs").max() <= 0.25 < \
            half_widths(theta, log_nu, n - 1, m, "all_pairs").max()
    # A reference design shows fewer pairs per item, so it needs more items than all pairs of 3 arms.
    ref = plan_ranking(theta, log_nu, width=0.25, raters=(5,), design="reference")
    assert ref[0]["n_items"] > plan_ranking(theta, log_nu, width=0.25, raters=(5,))[0]["n_items"]
    with pytest.raises(ValueError):
        plan_ranking(theta, log_nu, width=0.0)
    with pytest.raises(ValueError):
        plan_ranking(theta, log_nu, width=0.2, design="latin")


def test_rguide_power_for_arms_from_a_pilot_and_from_assumptions(arms_csv, capsys):
    assert main(["power", "--pilot", str(arms_csv), "--width", "0.3", "--raters", "3,5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["arms"] == list(TRUTH) and out["pilot"]["available"] and out["report_factor"] >= 1
    assert [r["raters_per_pair"] for r in out["plans"]] == [3, 5] and all(r["n_items"] for r in out["plans"])
    assert main(["power", "--arms", "5", "--design", "balanced_incomplete", "--pairs-per-item", "2",
                 "--width", "0.4", "--raters", "5"]) == 0
    assert "Rank 5 arms" in capsys.readouterr().out
    assert main(["power", "--arms", "a,b,c", "--design", "latin"]) == 2
    assert main(["power", "--arms", "a,b,c", "--strengths", "1,2"]) == 2


def test_report_says_where_the_answers_came_from():
    votes = synthetic_study(n_pairs=6, raters_min=3, raters_max=4, n_raters=10)
    stats = compute_all(votes, n_boot=0)
    human = render_report(stats, title="t")
    assert "Raters saw both images" in human and "machine judge" not in human
    stats["machine_pilot"] = {"preset": "demo"}
    machine = render_report(stats, title="t")
    assert "Raters saw both images" not in machine and "No person saw these images" in machine


def test_arms_report_without_a_ranking_says_why():
    from app.stats.votes import Vote

    votes = [Vote(pair_id=f"p{i}", rater_id="r1", choice="a", arm_a="a", arm_b="b", seed=i) for i in range(3)]
    votes += [Vote(pair_id=f"q{i}", rater_id="r2", choice="same", arm_a="b", arm_b="c", seed=i) for i in range(3)]
    stats = compute_arms(votes, n_boot=10)
    html = render_arms_report(stats, title="t")
    assert 'id="no-ranking"' in html and "forest-plot" not in html
    assert arms_table2_csv(stats).count("\n") == 1 + 2 * 4
    with pytest.raises(KeyError):
        forest_plot_png({})
