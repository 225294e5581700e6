"""The machine judge and the machine-rater pilot (``rguide pilot``)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from model_core.data import load_dataset
from model_core.evaluation.judge import JudgeSettings, MachineJudge, simulated_answers
from model_core.models.feature_net import load_feature_net
from model_core.presets import WEIGHTS_DIR
from rguide.cli import main


@pytest.fixture(scope="module")
def judge():
    net = load_feature_net(WEIGHTS_DIR / "demo" / "features.pt")
    return MachineJudge(net, load_dataset("mnist", split="test").images)


def test_real_digits_score_above_noise(judge):
    train = load_dataset("mnist", split="train")
    x, y = train.images[:40], train.labels[:40]
    real = judge.score(x, y)
    noise = judge.score(torch.rand_like(x) * 2 - 1, y)
    # Training digits are not in the judge's reference set (250 held-out digits after pruning), yet most lie
    # in some real k-NN ball (0.65 of these 40).
    assert np.mean(real["realism"] >= 1.0) > 0.5
    assert np.all(noise["realism"] < 1.0)
    assert np.mean(real["pred"] == y.numpy()) > 0.9
    assert np.all(real["u"] > noise["u"])


def test_simulated_raters_follow_the_judge_without_noise_and_say_same_inside_the_margin():
    u_a, u_b = np.array([2.0, -3.0, 0.1]), np.array([0.0, 0.0, 0.0])
    keys = ["p0", "p1", "p2"]
    exact = simulated_answers(u_a, u_b, JudgeSettings(noise=0.0, same_margin=0.5, raters=4), keys)
    assert [{a for a, _ in per} for per in exact] == [{"a"}, {"b"}, {"same"}]
    wide = simulated_answers(u_a, u_b, JudgeSettings(noise=0.0, same_margin=10.0, raters=2), keys)
    assert all(a == "same" for per in wide for a, _ in per)


def test_simulated_answers_depend_only_on_seed_pair_and_rater():
    s = JudgeSettings(noise=2.0, raters=6, seed=3)
    u = np.linspace(-2, 2, 5)
    keys = [f"pair-{i}" for i in range(5)]
    full = simulated_answers(u, -u, s, keys)
    assert simulated_answers(u[2:], -u[2:], s, keys[2:]) == full[2:]
    assert simulated_answers(u, -u, s, keys) == full
    assert simulated_answers(u, -u, JudgeSettings(noise=2.0, raters=6, seed=4), keys) != full
    sides = [side for per in full for _, side in per]
    assert set(sides) == {"left", "right"}


def test_pilot_cli_writes_machine_votes_statistics_and_plan_and_resumes(tmp_path, capsys):
    out = tmp_path / "pilot"
    argv = ["pilot", "--preset", "demo", "--per-class", "1", "--labels", "0,1", "--steps", "3", "--raters", "3",
            "--out", str(out), "--no-progress", "--threads", "1"]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(out / "votes.csv")))
    assert len(rows) == 2 * 3
    assert {r["rater"] for r in rows} == {"machine-01", "machine-02", "machine-03"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["machine_pilot"]["preset"] == "demo"
    assert json.loads((out / "power.json").read_text())["pilot"]["n_pairs"] <= 2
    pilot = json.loads((out / "pilot.json").read_text())
    assert [p["seed"] for p in pilot["pairs"]] == [0, 0]
    assert len(list((out / "images").glob("demo-*.png"))) == 4
    assert "Machine-rater pilot: demo" in (out / "report.html").read_text()
    cached = sorted((out / "samples").iterdir())
    assert main(argv) == 0  # from the cache: the same answers, no new samples
    assert sorted((out / "samples").iterdir()) == cached
    assert json.loads((out / "pilot.json").read_text())["pairs"] == pilot["pairs"]
    assert "simulated raters" in capsys.readouterr().out


@pytest.mark.parametrize("extra,msg", [(["--raters", "0"], "--raters must be >= 1"),
                                       (["--scale", "robust=x"], "--scale"),
                                       (["--scale", "tiny=2"], "--scale names tiny"),
                                       (["--judge", "/no/such.pt"], "--judge")])
def test_pilot_cli_errors_name_the_flag(tmp_path, capsys, extra, msg):
    assert main(["pilot", "--preset", "demo", "--per-class", "1", "--labels", "0", "--steps", "2",
                 "--out", str(tmp_path / "o"), "--no-progress", *extra]) == 2
    assert msg in capsys.readouterr().err


def test_multi_arm_pilot_judges_every_arm_pair_and_ranks_the_arms(tmp_path, capsys):
    out = tmp_path / "arms-pilot"
    argv = ["pilot", "--preset", "demo", "--per-class", "1", "--labels", "0,1", "--steps", "3", "--raters", "3",
            "--arms", "robust=robust:1,vanilla=vanilla:0.5,plain=none", "--out", str(out), "--no-progress",
            "--threads", "1", "--plan-raters", "3,5"]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(out / "votes.csv")))
    assert len(rows) == 2 * 3 * 3  # 2 items x 3 arm pairs x 3 raters
    assert {(r["arm_a"], r["arm_b"]) for r in rows} == {("robust", "vanilla"), ("robust", "plain"),
                                                        ("vanilla", "plain")}
    assert all(r["choice"] in (r["arm_a"], r["arm_b"], "same") for r in rows)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["schema"] == "rguide.stats.arms/1" and stats["arms"] == ["robust", "vanilla", "plain"]
    assert stats["machine_pilot"]["design"] == "all_pairs" and stats["ranking"]["model"] == "davidson"
    assert len(list((out / "images").glob("demo-*.png"))) == 2 * 3
    report = (out / "report.html").read_text()
    assert "No person saw these images" in report and "Raters saw two arms" not in report
    pilot = json.loads((out / "pilot.json").read_text())
    # Every arm of an item from the same seed: the records of one item share label and seed.
    assert {(p["label"], p["seed"]) for p in pilot["pairs"]} == {(0, 0), (1, 0)}
    assert json.loads((out / "power.json").read_text())["pilot"] is not None
    cached = sorted((out / "samples").iterdir())
    assert main(argv) == 0
    assert sorted((out / "samples").iterdir()) == cached
    assert json.loads((out / "pilot.json").read_text())["pairs"] == pilot["pairs"]
    assert "arm pairs judged" in capsys.readouterr().out
    assert main(["pilot", "--preset", "demo", "--per-class", "1", "--labels", "0", "--steps", "2", "--out",
                 str(tmp_path / "bad"), "--no-progress", "--arms", "a=robust:1,b=robus:1"]) == 2
    assert "--arms" in capsys.readouterr().err
