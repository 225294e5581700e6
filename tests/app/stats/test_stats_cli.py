"""``rguide stats`` / ``rguide power`` end to end through rguide.cli.main, and the HTML report."""
from __future__ import annotations

import base64
import csv
import io
import json
import re

import pytest

from app.stats import compute_all, write_votes_csv
from app.stats.export import latex_escape, table2_csv, table2_latex
from app.stats.report import render_report
from app.stats.synthetic import synthetic_study, votes_from_counts
from rguide.cli import main

# r, v, s per pair (the hand-computed case of test_stats_tables.py): shares 60%, 50%, none, 20%, 70% robust
HAND_COUNTS = {"p1": (3, 2, 0), "p2": (1, 1, 0), "p3": (0, 0, 3), "p4": (1, 4, 0), "p5": (7, 3, 1)}
HAND = "pair_id,rater_id,choice\n" + "".join(f"{v.pair_id},{v.rater_id},{v.choice}\n"
                                             for v in votes_from_counts(HAND_COUNTS))


@pytest.fixture
def hand_csv(tmp_path):
    path = tmp_path / "votes.csv"
    path.write_text(HAND)
    return path


def test_cli_json_keys_and_values(hand_csv, capsys):
    assert main(["stats", str(hand_csv), "--json", "--bootstrap", "200", "--seed", "3", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n_pairs"], out["n_raters"], out["n_answers"]) == (5, 11, 26)
    assert out["answer_shares"] == pytest.approx({"robust": 12 / 26, "vanilla": 10 / 26, "same": 4 / 26})
    assert out["answer_binomial_p"] == pytest.approx(0.8318, abs=1e-4)  # binomtest(12, 22): hand-checked in scipy
    rows = {r["threshold"]: r for r in out["thresholds"]}
    assert set(rows) == {0.5, 0.6, 0.7, 0.8}
    assert (rows[0.5]["robust"], rows[0.5]["vanilla"], rows[0.5]["none"]) == (0.4, 0.2, 0.4)
    assert (rows[0.8]["robust"], rows[0.8]["vanilla"], rows[0.8]["none"]) == (0.0, 0.0, 1.0)
    assert rows[0.5]["sign_test_p"] == pytest.approx(1.0)  # 2 vs 1 pairs
    assert rows[0.8]["sign_test_p"] is None
    assert out["settings"]["seed"] == 3 and out["answer_level"]["bootstrap"]["n_boot"] == 200
    assert "sign test" in out["primary"]["test"]
    assert len(out["input"]["sha256"]) == 64 and out["versions"]["scipy"]


def test_cli_thresholds_option_and_text_output(hand_csv, capsys):
    assert main(["stats", str(hand_csv), "--thresholds", "55,0.65", "--bootstrap", "0"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"55%\s+40\.0%\s+20\.0%\s+40\.0%", text)   # p1 (60%) and p5 (70%) pass 55%
    assert re.search(r"65%\s+20\.0%\s+20\.0%\s+60\.0%", text)
    assert "Primary:" in text and "No Preference" in text


def test_cli_writes_json_html_and_tidy_csv(hand_csv, tmp_path, capsys):
    out, html, tidy = tmp_path / "s.json", tmp_path / "r.html", tmp_path / "t.csv"
    assert main(["stats", str(hand_csv), "--out", str(out), "--html", str(html), "--export-csv", str(tidy),
                 "--bootstrap", "100", "--no-progress"]) == 0
    stats = json.loads(out.read_text())
    assert stats["n_answers"] == 26
    assert "<svg" in html.read_text() and "No Preference" in html.read_text()
    assert tidy.read_text().startswith("study,pair,label,class_name,seed,rater,choice,side_shown,")


@pytest.mark.parametrize("body,needle", [
    ("pair_id,choice\np1,robust\n", "rater_id"),
    ("pair_id,rater_id,choice\np1,r1,robust\np1,r2,maybe\n", "row 2 (line 3)"),
    ("pair_id,rater_id,choice\np1,r1,robust\np2,r1,same\np1,r1,vanilla\n", "row 3 (line 4)"),
    ("", "empty"),
    ("pair_id,rater_id,choice,seed\np1,r1,robust,x\n", "row 1 (line 2), column 'seed'"),
])
def test_cli_refuses_malformed_csv_and_writes_nothing(tmp_path, capsys, body, needle):
    votes = tmp_path / "bad.csv"
    votes.write_text(body)
    out, html, tidy = tmp_path / "s.json", tmp_path / "r.html", tmp_path / "t.csv"
    code = main(["stats", str(votes), "--json", "--out", str(out), "--html", str(html), "--export-csv", str(tidy)])
    captured = capsys.readouterr()
    assert code == 2
    assert needle in captured.err and "rguide stats: error:" in captured.err
    assert captured.out == ""
    assert not out.exists() and not html.exists() and not tidy.exists()


def test_cli_refuses_bad_options(hand_csv, tmp_path, capsys):
    assert main(["stats", str(hand_csv), "--thresholds", "0.4"]) == 2
    assert main(["stats", str(hand_csv), "--thresholds", "a,b"]) == 2
    assert main(["stats", str(hand_csv), "--out", str(tmp_path / "missing" / "s.json")]) == 2
    assert main(["stats", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert "outside [0.5, 1]" in err and "does not exist" in err


def test_report_is_self_contained_and_escapes_data():
    votes = votes_from_counts({"<b>x</b>": (3, 1, 0), "p2": (0, 2, 1), "p3": (1, 1, 0)})
    stats = compute_all(votes, n_boot=100)
    html = render_report(stats, title="Study <1>", images={"<b>x</b>": ["a.png", "https://example.org/b.png"]})
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    # The only URLs are the pair images passed in (and the SVG namespace, which is never fetched),
    # besides Table 2's downloads, which are embedded in the page.
    urls = set(re.findall(r'(?:src|href)="([^"]+)"', html))
    embedded = {u for u in urls if u.startswith(("data:text/csv;", "data:text/x-tex;"))}
    assert urls - embedded == {"a.png", "https://example.org/b.png"} and len(embedded) == 2
    csv_url = next(u for u in embedded if u.startswith("data:text/csv"))
    assert base64.b64decode(csv_url.split(",", 1)[1]).decode() == table2_csv(stats)
    assert "Study &lt;1&gt;" in html and "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert re.search(r"<th>Threshold</th><th>Robust</th><th>Vanilla</th><th>No Preference</th>", html)
    with pytest.raises(ValueError, match="not allowed"):
        render_report(stats, title="t", images={"p2": ["javascript:alert(1)", "b.png"]})


def test_table2_as_csv_and_latex_with_intervals(hand_csv, tmp_path, capsys):
    stats = compute_all(votes_from_counts({"p1": (3, 1, 0), "p2": (0, 2, 1), "p3": (1, 1, 0), "p_4": (2, 0, 0)}),
                        n_boot=0)
    rows = list(csv.DictReader(io.StringIO(table2_csv(stats))))
    assert [r["threshold_percent"] for r in rows] == ["50", "60", "70", "80"]
    first = stats["thresholds"][0]
    assert rows[0]["robust_pairs"] == str(first["counts"]["robust"]) == "2"
    assert rows[0]["robust_percent"] == "50.0" and rows[0]["no_preference_percent"] == "25.0"
    lo, hi = first["ci"]["robust"]
    assert (rows[0]["robust_ci_low"], rows[0]["robust_ci_high"]) == (f"{100 * lo:.1f}", f"{100 * hi:.1f}")
    tex = table2_latex(stats)
    assert r"Threshold & Robust & Vanilla & No Preference \\" in tex and tex.count(r"\%") >= 12
    assert r"\begin{tabular}{lccc}" in tex and "\\toprule" in tex and f"[{100 * lo:.1f}, {100 * hi:.1f}]" in tex
    assert latex_escape("a_b & 50%") == r"a\_b \& 50\%"
    # From the command line, next to the other outputs.
    out_csv, out_tex = tmp_path / "t2.csv", tmp_path / "t2.tex"
    assert main(["stats", str(hand_csv), "--bootstrap", "0", "--table2-csv", str(out_csv),
                 "--table2-tex", str(out_tex)]) == 0
    assert out_csv.read_text().startswith("threshold_percent,robust_percent") and "tabular" in out_tex.read_text()


def test_report_plot_has_one_mark_per_pair():
    stats = compute_all(votes_from_counts({"a": (3, 1, 0), "b": (1, 3, 0), "c": (1, 1, 2), "d": (0, 0, 2)}), n_boot=0)
    html = render_report(stats, title="t")
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert svg.count('class="bar-a"') == 1 and svg.count('class="bar-b"') == 1
    assert svg.count('class="bar-none"') == 2  # the 50% tie and the pair without side answers


def test_power_cli_with_a_pilot(tmp_path, capsys):
    pilot = tmp_path / "pilot.csv"
    write_votes_csv(pilot, synthetic_study(n_pairs=40, raters_min=8, raters_max=12, mean_raters=10, n_raters=40,
                                           seed=2))
    assert main(["power", "--pilot", str(pilot), "--share", "0.6", "--raters", "10,20", "--pairs", "200",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pilot"]["n_pairs"] == 40 and 0 <= out["icc"] < 1 and out["icc"] == out["pilot"]["icc"]
    assert [p["raters_per_pair"] for p in out["plans"]] == [10, 20]
    assert all(p["pairs_answer_level"] >= 1 and p["pairs_pair_level"] >= 1 for p in out["plans"])
    assert out["fixed_pairs"]["n_pairs"] == 200
    assert main(["power", "--share", "0.6"]) == 2  # no ICC and no pilot
    assert "--icc" in capsys.readouterr().err


@pytest.mark.parametrize("counts", [{"p": (0, 0, 3)}, {"p": (1, 0, 0)}, {"p": (2, 2, 0), "q": (0, 0, 1)}])
def test_degenerate_studies_give_nulls_not_errors(counts):
    stats = compute_all(votes_from_counts(counts), n_boot=50)
    json.dumps(stats, allow_nan=False)
    html = render_report(stats, title="tiny")
    assert "n/a" in html
    if counts == {"p": (0, 0, 3)}:  # nobody picked a side: no test is defined
        assert stats["answer_binomial_p"] is None and stats["primary"]["p"] is None
        assert stats["answer_level"]["bootstrap"]["share_a_among_sides"]["ci"] == [None, None]
