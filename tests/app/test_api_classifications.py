"""/v1/classifications in-process: checks at the edge (422, nothing stored), jobs run by the worker's own code."""
from __future__ import annotations

import base64
import hashlib

import numpy as np
import pytest

from job_api_support import Recorder, b64png, count_rows, run_queued
from survey_support import new_key, survey_api as api

pytestmark = pytest.mark.slow  # runs the tiny model in-process


BAD = [
    ({"preset": "tiny", "method": "diffusion", "png_base64": b64png(size=28)}, ["body", "png_base64"]),
    ({"preset": "tiny", "method": "diffusion", "png_base64": "not base64!"}, ["body", "png_base64"]),
    ({"preset": "tiny", "method": "diffusion",
      "png_base64": base64.b64encode(b"GIF89a" + bytes(40)).decode()}, ["body", "png_base64"]),
    ({"preset": "tiny", "method": "diffusion",
      "png_base64": base64.b64encode(b"\x89PNG\r\n\x1a\ntruncated").decode()}, ["body", "png_base64"]),
    ({"preset": "tiny", "method": "sharp", "png_base64": b64png()}, ["body", "method"]),
    ({"preset": "tiny", "method": "diffusion", "schedule": "3:9,6", "png_base64": b64png()}, ["body", "schedule"]),
    ({"preset": "tiny", "method": "robust", "schedule": "3", "png_base64": b64png()}, ["body", "schedule"]),
    ({"preset": "nope", "method": "robust", "png_base64": b64png()}, ["body", "preset"]),
]


@pytest.mark.parametrize("body,loc", BAD, ids=[str(loc) for _, loc in BAD])
def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(tmp_path, body, loc):
    with api(tmp_path) as client:
        r = client.post("/v1/classifications", json=body, headers=client.hdr)
        assert r.status_code == 422, r.text
        assert loc in [e["loc"] for e in r.json()["detail"]], r.json()
        assert count_rows(client, "classification") == 0
        assert not any(client.settings.media_dir.rglob("*.png"))


def test_classifications_need_a_key(tmp_path):
    with api(tmp_path) as client:
        assert client.post("/v1/classifications", json={"preset": "tiny", "png_base64": b64png()}).status_code == 401
        assert count_rows(client, "classification") == 0


def test_a_diffusion_classification_runs_on_the_worker_and_matches_the_core(tmp_path):
    from model_core.analysis.inputs import decode_upload
    from model_core.pipeline import get_pipeline
    from model_core.robustness.classify import classify_pixels

    with api(tmp_path) as client:
        png = b64png(3)
        r = client.post("/v1/classifications", json={"preset": "tiny", "method": "diffusion", "schedule": "2:2,4",
                                                     "seed": 5, "png_base64": png}, headers=client.hdr)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued" and r.headers["Location"] == job["links"]["self"]
        assert job["settings"] == {"method": "diffusion", "schedule": "2:2,4", "seed": 5}
        assert run_queued(client.settings, "classification") == ["succeeded"]
        done = client.get(job["links"]["self"], headers=client.hdr).json()
        assert done["status"] == "succeeded" and done["progress"] == 1.0
        assert done["network_evaluations"] == 2 * 4 + 2 * 2 == done["progress_total"]
        assert abs(sum(done["probabilities"]) - 1) < 1e-4 and len(done["probabilities"]) == 4
        pixels = decode_upload(base64.b64decode(png), image_size=16, channels=3)
        (ref,) = classify_pixels(get_pipeline("tiny", "cpu"), [pixels], "diffusion", schedule="2:2,4", seed=5)
        assert done["prediction"] == ref["prediction"]
        assert np.allclose(done["probabilities"], ref["probabilities"], atol=1e-5)
        r = client.post("/v1/classifications", json={"preset": "tiny", "method": "robust", "png_base64": png},
                        headers=client.hdr)
        assert run_queued(client.settings, "classification") == ["succeeded"]
        got = client.get(r.json()["links"]["self"], headers=client.hdr).json()
        assert got["network_evaluations"] == 1 and got["settings"] == {"method": "robust"}
        assert len(client.get("/v1/classifications", headers=client.hdr).json()["items"]) == 2
        # the stored image is served back, to its owner only
        img = client.get(job["links"]["image"], headers=client.hdr)
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert hashlib.sha256(img.content).hexdigest() == job["image_sha256"]
        stranger = {"Authorization": f"Bearer {new_key(client.settings, 'someone else')}"}
        assert client.get(job["links"]["image"], headers=stranger).status_code == 404


def test_cancel_a_queued_classification_and_the_reaper_resends_lost_ones(tmp_path):
    from worker.celery_app import CLASSIFICATION_TASK_NAME, TASK_NAME
    from worker.reaper import reap_once

    with api(tmp_path) as client:
        client.app.state.enqueuer.send = lambda ids, task=TASK_NAME: list(ids)  # "accepted", then lost
        a = client.post("/v1/classifications", json={"preset": "tiny", "png_base64": b64png()},
                        headers=client.hdr).json()
        b = client.post("/v1/classifications", json={"preset": "tiny", "png_base64": b64png(1)},
                        headers=client.hdr).json()
        assert client.post(a["links"]["cancel"], headers=client.hdr).json()["status"] == "canceled"
        recorder = Recorder()
        result = reap_once(client.settings.replace(requeue_after_seconds=0), recorder)
        assert b["id"] in result.resent and a["id"] not in result.resent
        assert ((b["id"],), CLASSIFICATION_TASK_NAME) in recorder.sent
