"""Helpers shared by the worker-job API tests (analyses, classifications, robustness reports): an uploadable PNG,
a kind's row count, its queued jobs run here by the worker's own code, and a broker that lost every message.

Kinds are named by their key in ``worker.job_kinds`` (``"analysis"``, ``"classification"``, ...), which knows
each kind's table and runner; the runners import torch only when a test runs jobs.
"""
from __future__ import annotations

import base64

import numpy as np
from sqlalchemy import func, select

from model_core.images import encode_png
from worker.celery_app import TASK_NAME
from worker.job_kinds import BY_KEY


def b64png(seed=0, size=16, channels=3) -> str:
    rng = np.random.default_rng(seed)
    return base64.b64encode(encode_png(rng.integers(0, 256, (size, size, channels), dtype=np.uint8))).decode()


def count_rows(client, kind: str) -> int:
    with client.app.state.sessions() as s:
        return s.scalar(select(func.count()).select_from(BY_KEY[kind].model()))


def run_queued(settings, kind: str) -> list[str]:
    """Run every queued job of ``kind`` here, as a worker would; their outcomes."""
    import torch

    from worker.db import session_factory

    torch.set_num_threads(1)  # the test machine's cores are shared
    model = BY_KEY[kind].model()
    with session_factory(settings.database_url)() as s:
        ids = list(s.scalars(select(model.id).where(model.status == "queued")))
    return [BY_KEY[kind].run(settings, i) for i in ids]


class Recorder:
    """An enqueuer for ``reap_once`` that records what it sends; its broker holds nothing, so every queued
    job's message counts as lost."""

    def __init__(self):
        self.sent = []

    def pending(self):
        return 0

    def send(self, ids, task=TASK_NAME):
        self.sent.append((tuple(ids), task))
        return list(ids)
