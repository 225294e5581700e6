"""/v1/classifications in-process: checks at the edge (422, nothing stored), jobs run by the worker's own code."""
from __future__ import annotations

import base64
import contextlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from model_core.images import encode_png
from survey_support import new_key, sqlite_settings

pytestmark = pytest.mark.slow  # runs the tiny model in-process


@contextlib.contextmanager
def api(tmp_path, **overrides):
    from app.main import create_app
    from worker import db

    settings = sqlite_settings(tmp_path, **overrides)
    with TestClient(create_app(settings, run_reaper=False)) as client:
        client.settings = settings
        client.hdr = {"Authorization": f"Bearer {new_key(settings)}"}
        yield client
    db.dispose_engines()


def b64png(seed=0, size=16, channels=3) -> str:
    rng = np.random.default_rng(seed)
    return base64.b64encode(encode_png(rng.integers(0, 256, (size, size, channels), dtype=np.uint8))).decode()


def count(client) -> int:
    from worker.classification_models import ClassificationJob

    with client.app.state.sessions() as s:
        return s.scalar(select(func.count()).select_from(ClassificationJob))


def run_queued(settings) -> list[str]:
    import torch

    from worker.classification_models import ClassificationJob
    from worker.classification_runner import run_classification_job
    from worker.db import session_factory

    torch.set_num_threads(1)
    with session_factory(settings.database_url)() as s:
        ids = list(s.scalars(select(ClassificationJob.id).where(ClassificationJob.status == "queued")))
    return [run_classification_job(settings, i) for i in ids]


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
        assert count(client) == 0
        assert not any(client.settings.media_dir.rglob("*.png"))


def test_classifications_need_a_key(tmp_path):
    with api(tmp_path) as client:
        assert client.post("/v1/classifications", json={"preset": "tiny", "png_base64": b64png()}).status_code == 401
        assert count(client) == 0


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
        assert run_queued(client.settings) == ["succeeded"]
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
        assert run_queued(client.settings) == ["succeeded"]
        got = client.get(r.json()["links"]["self"], headers=client.hdr).json()
        assert got["network_evaluations"] == 1 and got["settings"] == {"method": "robust"}
        assert len(client.get("/v1/classifications", headers=client.hdr).json()["items"]) == 2


def test_cancel_a_queued_classification_and_the_reaper_resends_lost_ones(tmp_path):
    from worker.celery_app import CLASSIFICATION_TASK_NAME, TASK_NAME
    from worker.reaper import reap_once

    class Recorder:
        def __init__(self):
            self.sent = []

        def pending(self):
            return 0

        def send(self, ids, task=TASK_NAME):
            self.sent.append((tuple(ids), task))
            return list(ids)

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
