"""Helpers shared by the survey tests: an in-process API, real generation, raters that fill in forms.

The generation jobs of a study are run in the test process by the real
worker code (``worker.runner.run_job``, the tiny preset, a few DDIM steps):
the same images a Celery worker would make, without starting one. The
browser test and the PostgreSQL test use real worker processes instead.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from conftest import make_settings
from fastapi.testclient import TestClient
from sqlalchemy import func, select

FAST = {"preset": "tiny", "steps": "ddim4", "seed": 11}


def sqlite_settings(tmp_path: Path, **overrides):
    return make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'survey.db'}",
                         broker_url="filesystem://localhost/", redis_url=None, **overrides)


@contextlib.contextmanager
def survey_api(tmp_path: Path, **overrides):
    """The app on SQLite with a researcher key: ``client.key`` and its header ``client.hdr``."""
    from app.main import create_app
    from worker import db

    settings = sqlite_settings(tmp_path, **overrides)
    with TestClient(create_app(settings, run_reaper=False)) as client:
        client.settings = settings
        client.key = new_key(settings)
        client.hdr = {"Authorization": f"Bearer {client.key}"}
        yield client
    db.dispose_engines()


def new_key(settings, name: str = "researcher") -> str:
    from app.keys import create_key
    from worker.db import session_scope

    with session_scope(settings.database_url) as s:
        return create_key(s, name)[1]


def run_queued_jobs(settings) -> list[str]:
    """Run every queued generation job here, with the worker's own code."""
    import torch

    from worker.db import session_factory
    from worker.models import Job
    from worker.runner import run_job

    torch.set_num_threads(1)  # the test machine's cores are shared
    with session_factory(settings.database_url)() as s:
        ids = list(s.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.created_at)))
    return [run_job(settings, job_id) for job_id in ids]


def create_study(client: TestClient, key: str, **body) -> dict:
    r = client.post("/v1/surveys", json={**FAST, **body}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 202, r.text
    return r.json()


def open_study(client: TestClient, key: str, **body) -> dict:
    study = create_study(client, key, **body)
    # A job run as a batch companion of an earlier one is "skipped" on its own turn.
    assert set(run_queued_jobs(client.app.state.settings)) <= {"succeeded", "superseded", "skipped"}
    r = client.get(f"/v1/surveys/{study['id']}", headers={"Authorization": f"Bearer {key}"})
    assert r.json()["status"] == "open", r.json()
    return r.json()


def field_value(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no field {name!r} in the page"
    return m.group(1)


def form_action(html: str, form_id: str | None = None) -> str:
    """Where a form of the page posts to (the first form, or the one with ``id``), as a browser reads it."""
    import html as html_lib

    pattern = rf'<form[^>]*id="{form_id}"[^>]*>' if form_id else r'<form method="post"[^>]*>'
    tag = re.search(pattern, html)
    assert tag, f"no form {form_id or ''} in the page"
    return html_lib.unescape(re.search(r'action="([^"]*)"', tag.group(0)).group(1))


@dataclass
class Rater:
    """A rater's browser without JavaScript: its own cookies, forms posted as a browser would."""
    client: TestClient
    study_id: str
    page: str = ""
    history: list[dict] = field(default_factory=list)

    @classmethod
    def new(cls, app, study_id: str) -> Rater:
        return cls(TestClient(app), study_id)

    @property
    def base(self) -> str:
        return f"/s/{self.study_id}"

    def start(self, **params) -> Rater:
        """Open the link, tick the consent box and press Start, as a browser does."""
        r = self.client.get(self.base, params=params)
        assert r.status_code == 200, r.text
        r = self.client.post(form_action(r.text), data={"csrf": field_value(r.text, "csrf"), "consent": "yes"})
        assert r.status_code == 200, r.text
        self.page, self.url = r.text, str(r.url)
        return self

    url: str = ""

    def load(self):
        """Reload the pair page (with whatever query the rater's links carry)."""
        query = self.url.split("?", 1)[1] if "?" in self.url else ""
        r = self.client.get(f"{self.base}/pair" + (f"?{query}" if query else ""))
        self.page, self.url = r.text, str(r.url)
        return r

    @property
    def done(self) -> bool:
        """The session is over: the thank-you page, or any other exit page."""
        return 'id="exit"' in self.page

    @property
    def completed(self) -> bool:
        return 'id="completion-code"' in self.page

    @property
    def outcome(self) -> str | None:
        m = re.search(r'data-outcome="([a-z_]+)"', self.page)
        return m.group(1) if m else None

    @property
    def instruction(self) -> str | None:
        """The side an instructed attention check on screen asks for."""
        m = re.search(r'id="check-instruction"[^>]*>.*?<strong>(\w+)</strong>', self.page, re.S)
        return m.group(1).lower() if m else None

    @property
    def pair_id(self) -> str:
        return field_value(self.page, "pair")

    @property
    def csrf(self) -> str:
        return field_value(self.page, "csrf")

    def vote(self, answer: str, **extra):
        """Answer the pair on screen; follows the redirect to the next page as a browser does."""
        form = {"csrf": self.csrf, "pair": self.pair_id, "answer": answer, **extra}
        r = self.client.post(form_action(self.page, "vote-form"), data=form)
        self.history.append({"pair": form["pair"], "answer": answer, "status": r.status_code})
        if r.status_code == 200:
            self.page, self.url = r.text, str(r.url)
        return r

    def finish(self, answer_for=lambda i, pair: "left", follow_checks: bool = True) -> int:
        """Answer until the session ends; instructed checks are followed unless ``follow_checks`` is off."""
        n = 0
        while not self.done:
            answer = (follow_checks and self.instruction) or answer_for(n, self.pair_id)
            r = self.vote(answer)
            assert r.status_code == 200, r.text
            n += 1
        return n


def snapshot(settings) -> dict:
    """Everything a refused vote must leave as it was."""
    from worker.db import session_factory
    from worker.survey_models import Assignment, SurveyPair, SurveyVote
    from worker.survey_models import Rater as RaterRow

    with session_factory(settings.database_url)() as s:
        return {
            "votes": sorted((v.id, v.pair_id, v.rater_id, v.side) for v in s.scalars(select(SurveyVote))),
            "assignments": sorted((a.id, a.answered_at) for a in s.scalars(select(Assignment))),
            "counters": sorted((p.id, p.n_assigned) for p in s.scalars(select(SurveyPair))),
            "raters": s.scalar(select(func.count()).select_from(RaterRow)),
        }
