"""Studies with more than two arms, in-process (SQLite, the real generation code): arms, designs, balance, exports."""
from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter

import pytest
from sqlalchemy import select
from survey_support import FAST, Rater, create_study, open_study, run_queued_jobs, survey_api

ARMS = [{"method": "robust", "scale": 1.0}, {"method": "vanilla", "scale": 0.5},
        {"method": "robust", "scale": 3.0, "name": "robust-strong"}]


@pytest.fixture
def api(tmp_path):
    with survey_api(tmp_path) as client:
        yield client


def _rows(api, model):
    with api.app.state.sessions() as s:
        return list(s.scalars(select(model)))


def test_three_arms_are_seed_matched_batched_and_listed_in_the_manifest(api):
    from worker.models import Job

    study = create_study(api, api.key, num_pairs=3, arms=ARMS, raters_per_pair=2, attention_checks=True)
    assert [a["name"] for a in study["arms"]] == ["robust", "vanilla", "robust-strong"]
    assert study["design"] == "all_pairs" and study["num_pairs"] == 9  # 3 items x 3 arm pairs
    jobs = _rows(api, Job)
    # robust 1.0 and vanilla 0.5 share one pair job (one UNet pass per step); robust 3.0 has its own.
    assert sorted(j.guidance for j in jobs) == ["pair", "robust"]
    assert all(j.seeds == jobs[0].seeds and j.labels == jobs[0].labels for j in jobs)
    # The robust job runs as a batch companion of the pair job (then "skipped" on its own turn).
    assert "succeeded" in run_queued_jobs(api.settings)
    assert {j.status for j in _rows(api, Job)} == {"succeeded"}
    status = api.get(f"/v1/surveys/{study['id']}", headers=api.hdr).json()
    assert status["status"] == "open"
    manifest = api.get(f"/v1/surveys/{study['id']}/manifest", headers=api.hdr).json()
    assert [a["name"] for a in manifest["settings"]["arms"]] == ["robust", "vanilla", "robust-strong"]
    assert manifest["settings"]["design"] == "all_pairs"
    assert len(manifest["items"]) == 3
    for i, item in enumerate(manifest["items"]):
        assert item["seed"] == FAST["seed"] + i
        assert list(item["images"]) == ["robust", "vanilla", "robust-strong"]
        scales = [im["scale"] for im in item["images"].values()]
        assert scales == [1.0, 0.5, 3.0]
        assert len({im["sha256"] for im in item["images"].values()}) == 3
        png = api.get(f"/v1/images/{item['images']['robust-strong']['image_id']}.png", headers=api.hdr).content
        assert hashlib.sha256(png).hexdigest() == item["images"]["robust-strong"]["sha256"]
    real = [p for p in manifest["pairs"] if not p["attention_check"]]
    assert Counter(tuple(p["arms"]) for p in real) == {("robust", "vanilla"): 3, ("robust", "robust-strong"): 3,
                                                        ("vanilla", "robust-strong"): 3}
    # The same arm's image of an item is one file whichever arm pair shows it.
    for p in real:
        item = next(it for it in manifest["items"] if it["seed"] == p["seed"])
        for arm, im in p["images"].items():
            assert im["sha256"] == item["images"][arm]["sha256"]


def test_reference_and_balanced_incomplete_designs(api):
    ref = create_study(api, api.key, num_pairs=2, arms=ARMS, design="reference", reference_arm="vanilla")
    pairs = [tuple(sorted((p.arm_a, p.arm_b))) for p in _pairs(api, ref["id"])]
    assert Counter(pairs) == {("robust", "vanilla"): 2, ("robust-strong", "vanilla"): 2}
    arms = ARMS + [{"method": "vanilla", "scale": 2.0}, {"method": "none"}]
    bib = create_study(api, api.key, num_pairs=10, arms=arms, design="balanced_incomplete", pairs_per_item=2)
    assert [a["name"] for a in bib["arms"]][-2:] == ["vanilla@2", "unguided"]
    per_pair = Counter((p.arm_a, p.arm_b) for p in _pairs(api, bib["id"]))
    assert len(per_pair) == 10 and set(per_pair.values()) == {2}  # 10 items x 2 = 20 = 10 arm pairs x 2


def _pairs(api, study_id):
    from worker.survey_models import SurveyPair

    with api.app.state.sessions() as s:
        return list(s.scalars(select(SurveyPair).where(SurveyPair.study_id == study_id,
                                                       SurveyPair.is_attention_check.is_(False))))


@pytest.mark.parametrize("body, loc, words", [
    ({"arms": [{"method": "robust"}]}, ["body", "arms"], "at least 2"),
    ({"arms": [{"method": "robust"}, {"method": "robus"}]}, ["body", "arms", 1, "method"], "not a method"),
    ({"arms": [{"method": "robust"}, {"method": "robust"}]}, ["body", "arms", 1], "same method"),
    ({"arms": [{"method": "robust"}, {"method": "vanilla", "name": "same"}]}, ["body", "arms", 1, "name"],
     "reserved"),
    ({"arms": [{"method": "robust"}, {"method": "vanilla", "scale": -1}]}, ["body", "arms", 1, "scale"], ""),
    ({"arms": [{"method": "robust"}, {"method": "none", "scale": 2}]}, ["body", "arms", 1, "scale"], "no scale"),
    ({"arms": ARMS, "method_a": "robust"}, ["body", "method_a"], "either arms"),
    ({"design": "reference"}, ["body", "design"], "needs arms"),
    ({"arms": ARMS, "design": "reference", "reference_arm": "x"}, ["body", "reference_arm"], "not one of"),
    ({"arms": ARMS, "design": "all_pairs", "pairs_per_item": 2}, ["body", "pairs_per_item"], "balanced"),
    ({"arms": ARMS, "design": "latin"}, ["body", "design"], ""),
    ({"arms": ARMS, "design": "balanced_incomplete", "pairs_per_item": 4}, ["body", "pairs_per_item"], "at most"),
])
def test_invalid_arms_name_the_field_and_store_nothing(api, body, loc, words):
    from worker.models import Job
    from worker.survey_models import Study

    r = api.post("/v1/surveys", json={**FAST, "num_pairs": 2, **body}, headers=api.hdr)
    assert r.status_code == 422, r.text
    problems = r.json()["detail"]
    assert any(p["loc"][:len(loc)] == loc and words in p["msg"] for p in problems), problems
    assert _rows(api, Study) == [] and _rows(api, Job) == []


def test_balance_per_arm_pair_and_seed_and_sides_then_exports_and_results(api):
    """Raters interleaved: every (arm pair, seed) row within one answer of the others, sides within one."""
    from worker.survey_models import SurveyVote

    study = open_study(api, api.key, num_pairs=3, arms=ARMS, raters_per_pair=1000, pairs_per_rater=4)
    raters = [Rater.new(api.app, study["id"]).start() for _ in range(17)]
    answers = ["left", "right", "same", "left"]
    step = 0
    while not all(r.done for r in raters):
        for i, r in enumerate(raters):
            if not r.done and (i + step) % 3:
                assert r.vote(answers[(i + step) % 4]).status_code == 200
        step += 1
    votes = _rows(api, SurveyVote)
    assert len(votes) == 17 * 4
    per_row = Counter(v.pair_id for v in votes)
    rows = _pairs(api, study["id"])
    counts = [per_row.get(p.id, 0) for p in rows]
    assert max(counts) - min(counts) <= 1, counts
    for p in rows:
        sides = [v.a_side for v in votes if v.pair_id == p.id]
        assert abs(sides.count("left") - sides.count("right")) <= 1
        # A vote names an arm of its own row.
        assert {v.choice for v in votes if v.pair_id == p.id} <= {p.arm_a, p.arm_b, "same"}
    status = api.get(f"/v1/surveys/{study['id']}?preferences=true", headers=api.hdr).json()
    assert [e["arms"] for e in status["arm_pairs"]] == [["robust", "vanilla"], ["robust", "robust-strong"],
                                                        ["vanilla", "robust-strong"]]
    assert sum(e["answers"] for e in status["arm_pairs"]) == len(votes)
    assert [e["n_items"] for e in status["arm_pairs"]] == [3, 3, 3]

    text = api.get(f"/v1/surveys/{study['id']}/votes?format=csv", headers=api.hdr).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == len(votes)
    for row in table:
        assert {row["left_arm"], row["right_arm"]} == {row["arm_a"], row["arm_b"]}
        assert row["left_method"] in ("robust", "vanilla")
        assert row["left_arm"] == (row["arm_a"] if row["a_side"] == "left" else row["arm_b"])
    tidy = api.get(f"/v1/surveys/{study['id']}/votes?format=tidy", headers=api.hdr).text
    assert tidy.splitlines()[0].endswith("arm_a,arm_b")

    results = api.get(f"/v1/surveys/{study['id']}/results?n_boot=50", headers=api.hdr).json()
    assert results["schema"] == "rguide.stats.arms/1" and results["arms"] == ["robust", "vanilla", "robust-strong"]
    assert results["ranking"]["model"] == "davidson" and results["n_answers"] == len(votes)
    from app.stats import parse_votes_csv
    from app.stats.arms import compute_arms

    again = compute_arms(parse_votes_csv(tidy), n_boot=50, arms=results["arms"])
    assert again["ranking"] == results["ranking"]
    report = api.get(f"/v1/surveys/{study['id']}/report?n_boot=50", headers=api.hdr)
    assert report.status_code == 200 and 'id="ranking"' in report.text and 'id="forest-plot"' in report.text
    page = api.get(f"/v1/surveys/{study['id']}/table2?format=csv", headers=api.hdr)
    assert page.status_code == 200 and page.text.startswith("arm_a,arm_b,")


def test_researcher_page_shows_answers_per_arm_pair(api):
    study = open_study(api, api.key, num_pairs=2, arms=ARMS, raters_per_pair=3)
    Rater.new(api.app, study["id"]).start().finish()
    from fastapi.testclient import TestClient

    web = TestClient(api.app)
    web.post("/researcher/login", data={"api_key": api.key, "next": f"/researcher/surveys/{study['id']}"})
    page = web.get(f"/researcher/surveys/{study['id']}?preferences=1")
    assert page.status_code == 200 and 'id="arm-pairs"' in page.text
    assert "robust vs robust-strong" in page.text and "design all_pairs" in page.text
    assert "built-in method" not in page.text
    row = page.text.split('id="arm-pairs"')[1].split("</tr>")[1]
    assert "<td>robust vs vanilla</td><td>2</td>" in row


def test_an_arm_with_its_own_steps_gets_its_own_job_and_keeps_its_setting(api):
    from worker.models import Job

    study = create_study(api, api.key, num_pairs=2, arms=[{"method": "robust"},
                                                          {"method": "vanilla", "steps": "ddim6", "name": "v6"}])
    assert [(a["name"], a["steps"]) for a in study["arms"]] == [("robust", "ddim4"), ("v6", "ddim6")]
    jobs = sorted((j.guidance, j.steps) for j in _rows(api, Job))
    assert jobs == [("robust", "ddim4"), ("vanilla", "ddim6")]  # not one pair job: their steps differ
    r = api.post("/v1/surveys", json={**FAST, "num_pairs": 1, "arms": [{"method": "robust"},
                                                                      {"method": "vanilla", "steps": "zzz"}]},
                 headers=api.hdr)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "arms", 1]
