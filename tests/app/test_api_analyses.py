"""/v1/analyses and the researcher's analysis pages, in-process; jobs run by the worker's own code."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from job_api_support import Recorder, b64png, count_rows, run_queued
from survey_support import new_key, survey_api

pytestmark = pytest.mark.slow  # runs the tiny model in-process


def api(tmp_path):
    return survey_api(tmp_path, max_images_per_request=3)


BAD = [
    ({"kind": "gradients", "preset": "tiny", "classifiers": ["robust", "sharp"]}, ["body", "classifiers", 1]),
    ({"kind": "gradients", "preset": "tiny", "images": [{"png_base64": b64png(), "label": 7}]},
     ["body", "images", 0, "label"]),
    ({"kind": "gradients", "preset": "tiny", "images": [{"png_base64": "not base64!", "label": 1}]},
     ["body", "images", 0, "png_base64"]),
    ({"kind": "gradients", "preset": "tiny",
      "images": [{"png_base64": base64.b64encode(b"\x89PNG\r\n\x1a\ntruncated").decode(), "label": 1}]},
     ["body", "images", 0, "png_base64"]),
    ({"kind": "gradients", "preset": "tiny", "images": [{"png_base64": b64png(size=32), "label": 1}]},
     ["body", "images", 0, "png_base64"]),
    ({"kind": "gradients", "preset": "tiny", "images": [{"png_base64": b64png(i), "label": 1} for i in range(4)]},
     ["body", "images"]),
    ({"kind": "compare", "preset": "tiny", "labels": [1], "frames": 3}, ["body", "frames"]),
    ({"kind": "compare", "preset": "tiny", "labels": [1, 99]}, ["body", "labels", 1]),
    ({"kind": "maximize", "preset": "tiny", "images": [{"png_base64": b64png(), "label": 1}], "judge": "features"},
     ["body", "judge"]),
    ({"kind": "saliency", "preset": "tiny"}, ["body", "kind"]),
]


@pytest.mark.parametrize("body,loc", BAD, ids=[str(loc) for _, loc in BAD])
def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(tmp_path, body, loc):
    with api(tmp_path) as client:
        r = client.post("/v1/analyses", json=body, headers=client.hdr)
        assert r.status_code == 422, r.text
        assert loc in [e["loc"] for e in r.json()["detail"]], r.json()
        assert count_rows(client, "analysis") == 0
        assert not any(client.settings.media_dir.rglob("*.png"))


def test_analyses_need_a_researcher_key(tmp_path):
    with api(tmp_path) as client:
        r = client.post("/v1/analyses", json={"kind": "compare", "preset": "tiny", "labels": [1]})
        assert r.status_code == 401
        assert client.get("/v1/analyses").status_code == 401
        assert count_rows(client, "analysis") == 0


def test_a_compare_job_runs_on_the_worker_and_matches_the_cli(tmp_path):
    from model_core.analysis import sidecar
    from model_core.analysis.requests import resolve_analysis

    with api(tmp_path) as client:
        body = {"kind": "compare", "preset": "tiny", "labels": [1, "blue"], "seed": 4, "steps": "4"}
        r = client.post("/v1/analyses", json=body, headers=client.hdr)
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["Location"] == job["links"]["self"] and job["status"] == "queued"
        assert job["settings"]["labels"] == [1, 2] and job["settings"]["seeds"] == [4, 5]
        assert run_queued(client.settings, "analysis") == ["succeeded"]
        done = client.get(job["links"]["self"], headers=client.hdr).json()
        assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["progress_total"] == 4
        png = client.get(done["files"][0]["url"], headers=client.hdr)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        # The worker's bytes are the command line's: one resolver, one implementation.
        local = sidecar.run("compare", resolve_analysis("compare", {k: v for k, v in body.items()
                                                                    if k not in ("kind", "preset")},
                                                        preset="tiny").settings, device="cpu")
        assert png.content == local.files["compare.png"]
        doc = client.get(done["links"]["sidecar"], headers=client.hdr).json()
        assert doc["files"]["compare.png"] == done["files"][0]["sha256"]

        # Another key sees nothing of it.
        other = {"Authorization": f"Bearer {new_key(client.settings, 'other')}"}
        assert client.get(job["links"]["self"], headers=other).status_code == 404
        assert client.get(done["files"][0]["url"], headers=other).status_code == 404
        assert client.get("/v1/analyses", headers=other).json()["items"] == []


def test_uploaded_images_are_stored_served_and_reproduce_from_the_downloaded_sidecar(tmp_path):
    from model_core.analysis import sidecar

    with api(tmp_path) as client:
        body = {"kind": "gradients", "preset": "tiny", "timesteps": [0, 400], "buckets": 2,
                "images": [{"png_base64": b64png(1), "label": 2}, {"png_base64": b64png(2), "label": "red"}]}
        job = client.post("/v1/analyses", json=body, headers=client.hdr).json()
        assert [i["label"] for i in job["inputs"]] == [2, 0]
        assert run_queued(client.settings, "analysis") == ["succeeded"]
        done = client.get(job["links"]["self"], headers=client.hdr).json()
        assert {f["name"] for f in done["files"]} == {"gradients.png", "gradients.md"}
        assert "robust - vanilla" in done["summary"]["buckets"]["0-499"]["differences"]
        # A researcher downloads the sidecar and the inputs, and reproduces the picture bit for bit.
        folder = tmp_path / "download"
        (folder / "inputs").mkdir(parents=True)
        (folder / "gradients.json").write_text(json.dumps(client.get(done["links"]["sidecar"],
                                                                     headers=client.hdr).json()))
        for item in done["inputs"]:
            (folder / "inputs" / f"{item['sha256']}.png").write_bytes(client.get(item["url"],
                                                                                 headers=client.hdr).content)
        _, verdict = sidecar.reproduce(folder / "gradients.json", device="cpu")
        assert verdict.identical, verdict.differences


def test_cancel_a_queued_analysis(tmp_path):
    with api(tmp_path) as client:
        job = client.post("/v1/analyses", json={"kind": "compare", "preset": "tiny", "labels": [0]},
                          headers=client.hdr).json()
        r = client.post(job["links"]["cancel"], headers=client.hdr)
        assert r.status_code == 200 and r.json()["status"] == "canceled"
        assert run_queued(client.settings, "analysis") == []


def test_the_researcher_pages_show_the_result_with_its_settings(tmp_path):
    with api(tmp_path) as client:
        job = client.post("/v1/analyses", json={"kind": "gradients", "preset": "tiny", "timesteps": [0, 500],
                                                "buckets": 2,
                                                "images": [{"png_base64": b64png(1), "label": 2}]},
                          headers=client.hdr).json()
        key = client.hdr["Authorization"].split()[1]
        assert client.post("/researcher/login", data={"api_key": key}, follow_redirects=False).status_code == 303
        page = client.get(job["links"]["page"])
        assert page.status_code == 200 and "queued" in page.text and page.headers["Refresh"] == "5"
        run_queued(client.settings, "analysis")
        page = client.get(job["links"]["page"]).text
        assert 'src="/v1/analyses/%s/files/gradients.png"' % job["id"] in page
        assert "robust - vanilla (paired)" in page and "<th>timesteps</th>" in page
        assert client.get(f"/v1/analyses/{job['id']}/files/gradients.png").status_code == 200  # by cookie
        listing = client.get("/researcher/analyses").text
        assert job["links"]["page"] in listing
        assert "/researcher/analyses" in client.get("/researcher/surveys").text


# -- the generation API's "previews": N ----------------------------------------------------------------

def test_generation_previews_are_stored_with_the_job_and_end_on_the_image(tmp_path):
    import io

    from PIL import Image as PILImage

    from survey_support import run_queued_jobs

    with api(tmp_path) as client:
        body = {"preset": "tiny", "class_labels": [2], "guidance": "pair", "steps": "6", "seed": 3}
        with_previews = client.post("/v1/generations", json={**body, "previews": 3}).json()
        plain = client.post("/v1/generations", json={**body, "seed": 3}).json()  # shares the batch
        run_queued_jobs(client.settings)
        done = client.get(with_previews["links"]["self"]).json()
        alone = client.get(plain["links"]["self"]).json()
        assert done["status"] == "succeeded" and len(done["images"]) == 2
        for im, twin in zip(done["images"], alone["images"]):
            assert im["sha256"] == twin["sha256"]  # recording previews changes nothing about the image
            assert [p["frame"] for p in im["previews"]] == [0, 1, 2]
            assert [p["step"] for p in im["previews"]] == [1, 3, 6]  # steps round(linspace(0, 5, 3)) + 1
            assert im["previews"][0]["timestep"] > im["previews"][1]["timestep"] > im["previews"][2]["timestep"]

            def pixels(url):
                r = client.get(url)
                assert r.status_code == 200 and r.headers["content-type"] == "image/png"
                return np.asarray(PILImage.open(io.BytesIO(r.content)))

            assert np.array_equal(pixels(im["previews"][-1]["url"]), pixels(im["url"]))
            assert not np.array_equal(pixels(im["previews"][0]["url"]), pixels(im["url"]))
        assert alone["images"][0]["previews"] == []


@pytest.mark.parametrize("previews,steps", [(7, "6"), (99, "100"), (-1, "6")])
def test_too_many_previews_is_a_422_naming_the_field(tmp_path, previews, steps):
    from conftest import count_jobs

    with api(tmp_path) as client:
        r = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [1], "guidance": "robust",
                                                 "steps": steps, "previews": previews})
        assert r.status_code == 422 and ["body", "previews"] in [e["loc"] for e in r.json()["detail"]], r.text
        assert count_jobs(client) == 0


def test_a_running_analysis_stops_at_its_next_progress_report_when_canceled(tmp_path):
    import threading

    from conftest import wait_until
    from worker.analysis_runner import run_analysis_job

    with api(tmp_path) as client:
        job = client.post("/v1/analyses", json={"kind": "trajectory", "preset": "tiny", "labels": [1],
                                                "steps": "400", "frames": 2}, headers=client.hdr).json()
        outcome = []
        worker = threading.Thread(target=lambda: outcome.append(run_analysis_job(client.settings, job["id"])))
        worker.start()
        wait_until(lambda: client.get(job["links"]["self"], headers=client.hdr).json()["progress_step"] > 1,
                   timeout=120, what="the analysis to report progress")
        assert client.post(job["links"]["cancel"], headers=client.hdr).json()["cancel_requested"]
        worker.join(timeout=120)
        assert outcome == ["canceled"]
        done = client.get(job["links"]["self"], headers=client.hdr).json()
        assert done["status"] == "canceled" and done["files"] == [] and done["progress_step"] < 400


def test_the_reaper_resends_a_lost_analysis_as_an_analysis_task(tmp_path):
    from worker.celery_app import ANALYSIS_TASK_NAME, TASK_NAME
    from worker.reaper import reap_once

    with api(tmp_path) as client:
        client.app.state.enqueuer.send = lambda ids, task=TASK_NAME: list(ids)  # "accepted", then lost
        job = client.post("/v1/analyses", json={"kind": "compare", "preset": "tiny", "labels": [0]},
                          headers=client.hdr).json()
        gen = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [0], "guidance": "none"}).json()
        recorder = Recorder()
        result = reap_once(client.settings.replace(requeue_after_seconds=0), recorder)
        assert set(result.resent) == {job["id"], gen["id"]}
        assert ((job["id"],), ANALYSIS_TASK_NAME) in recorder.sent and ((gen["id"],), TASK_NAME) in recorder.sent
