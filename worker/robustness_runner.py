"""Runs one robustness-report job: claim, ``model_core.robustness.report.run_report``, store JSON and Markdown.

Progress: the report announces its phases one by one (clean accuracy per
defence, crafting each transfer attack, each white-box attack, the sanity
checks; ``report.planned_phases`` of them), each worth 100 steps, split by
the images done inside it where the phase reports them. Written at most
every ``progress_interval_seconds``; each write checks for a cancel request,
so a canceled report stops at its next write (an attack that reports nothing
while it runs, AutoAttack in particular, finishes its phase first).
"""
from __future__ import annotations

import logging
import time

from worker import jobs, robustness_jobs
from worker.config import Settings
from worker.db import session_factory
from worker.robustness_models import RobustnessJob
from worker.runner import _LeaseKeeper, new_owner

log = logging.getLogger("rguide.worker")
STEPS_PER_PHASE = 100


class Canceled(Exception):
    pass


def phase_progress(total_phases: int, write):
    """A ``run_report`` progress callback that turns (phase, done, total) into ``write(step, total_steps)``."""
    state = {"label": None, "index": -1}
    total_steps = total_phases * STEPS_PER_PHASE

    def progress(phase: str, done: float, total: float) -> None:
        if phase != state["label"]:
            state["label"], state["index"] = phase, state["index"] + 1
        frac = min(max(float(done) / float(total), 0.0), 1.0) if total else 0.0
        step = min(state["index"] * STEPS_PER_PHASE + int(frac * STEPS_PER_PHASE), total_steps)
        write(step, total_steps)

    return progress


def run_robustness_job(settings: Settings, job_id: str) -> str:
    Session = session_factory(settings.database_url)
    owner = new_owner()
    with Session() as s:
        job = jobs.claim(s, job_id, owner, settings.lease_seconds, settings.max_attempts, model=RobustnessJob)
        if job is None:
            log.info("robustness report %s: nothing to do", job_id)
            return "skipped"
        cfg = dict(job.settings)
    keeper = _LeaseKeeper(Session, [job_id], owner, settings, RobustnessJob)
    keeper.start()
    try:
        return _run(settings, Session, job_id, cfg, owner)
    except Canceled:
        with Session() as s:
            jobs.finish_canceled(s, [job_id], owner, RobustnessJob)
        return "canceled"
    except Exception as exc:
        log.exception("robustness report %s failed", job_id)
        from model_core.errors import message

        with Session() as s:
            jobs.finish_failed(s, [job_id], owner, f"{type(exc).__name__}: {message(exc)}", RobustnessJob)
        return "failed"
    finally:
        keeper.stop()


def config_from_settings(stored: dict, device: str):
    """The stored settings (``ReportConfig.to_dict()``, lists for tuples) as a ``ReportConfig`` on ``device``."""
    from model_core.robustness.report import ReportConfig

    cfg = dict(stored)
    for name in ("attacks", "settings", "defences", "diffusion_gradients", "sanity_eps", "sanity_eps_l2"):
        if cfg.get(name) is not None:
            cfg[name] = tuple(cfg[name])
    return ReportConfig(**{**cfg, "device": device})


def _run(settings: Settings, Session, job_id: str, stored: dict, owner: str) -> str:
    from model_core.pipeline import get_pipeline
    from model_core.robustness.report import planned_phases, run_report, to_markdown

    t0 = time.monotonic()
    pipe = get_pipeline(stored["preset"])
    cfg = config_from_settings(stored, str(pipe.device))
    write = jobs.throttled_progress(Session, job_id, owner, RobustnessJob, settings.progress_interval_seconds,
                                    Canceled)
    progress = phase_progress(planned_phases(cfg), write)
    write(0, planned_phases(cfg) * STEPS_PER_PHASE)
    out = run_report(cfg, pipeline=pipe, progress=progress)
    out["report"]["job"] = {"id": job_id, "worker": owner}
    markdown = to_markdown(out["report"])
    with Session() as s:
        done = robustness_jobs.complete(s, job_id, owner, out, markdown)
    log.info("robustness report %s: %s in %.1f s", job_id, "succeeded" if done else "not stored",
             time.monotonic() - t0)
    if not done:
        raise Canceled()
    return "succeeded"
