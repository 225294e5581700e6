"""A study's machine-rater pilot on the service side: ask for it, follow it, read its votes and statistics.

The votes are the machine judge's (``worker.machine_vote_runner``), stored in ``survey_machine_votes``.
They are read here and only here; ``app.survey.export`` (the human votes, their statistics, exports
and report) never reads that table. The two sets meet only in :func:`results`, where the agreement of
machine and human answers is reported next to the machine statistics.
"""
from __future__ import annotations

import csv
import io

from sqlalchemy.orm import Session

from app.stats import Vote
from app.stats import machine as machine_stats
from model_core.presets import UnknownPresetError, get_preset
from worker import machine_votes
from worker.survey_models import MachineVoteJob, Study

NOTE = ("Machine raters are a proxy: a judge network and simulated raters answered these pairs. Their votes are "
        "stored apart from the human votes and never enter the human statistics, exports or report.")
CSV_COLUMNS = ("study_id", "pair_id", "pair_ordinal", "label", "class_name", "seed", "rater", "side", "choice",
               "a_side", "left_arm", "right_arm", "u_a", "u_b", "judge_sha256", "judge", "code_version", "job_id",
               "created_at")
ARM_COLUMNS = ("arm_a", "arm_b")


class PilotRefused(Exception):
    """The pilot cannot run on this study now (no judge network, not open yet, other settings stored)."""


def has_judge(study: Study) -> bool:
    try:
        return get_preset(study.preset).judge_network() is not None
    except UnknownPresetError:
        return False


def request(session: Session, study: Study, settings: dict, owner_key_id: str | None) -> tuple[MachineVoteJob, bool]:
    """The study's pilot job for these judge settings: the existing one, or a new queued one. Commits.

    A repeat with the same settings returns the job it repeats (a failed or canceled one is run again:
    its votes, if any, are kept and the re-run writes the same rows). Other settings while machine votes
    or a live job exist are refused: delete them first (``DELETE .../machine-votes``).
    """
    if not has_judge(study):
        raise PilotRefused(f"preset {study.preset!r} has no judge network for the machine-rater pilot (the digit "
                           "presets demo and demo-uncond have one); run `rguide pilot --preset NAME --judge PATH` "
                           "offline instead")
    if study.status not in ("open", "closed"):
        raise PilotRefused(f"study {study.id} is {study.status}: the pilot judges the study's own images, which "
                           "exist once it is open (give machine_pilot when creating a study to run it then)")
    digest = machine_votes.settings_digest(settings)
    live = machine_votes.live_job(session, study.id)
    if live is not None:
        if live.settings_sha256 == digest:
            return live, False
        raise PilotRefused(f"study {study.id} already has a machine pilot with other settings ({live.status}); "
                           "DELETE its machine votes first to run another")
    last = machine_votes.latest(session, study.id)
    if machine_votes.count_votes(session, study.id) and (last is None or last.settings_sha256 != digest):
        raise PilotRefused(f"study {study.id} has machine votes from other settings; DELETE them first")
    job = machine_votes.new_job(study, settings, owner_key_id)
    session.add(job)
    session.commit()
    return job, True


def unsent(session: Session, study: Study) -> list[str]:
    """Queued pilot jobs never sent to the broker (queued by the study's opening)."""
    from sqlalchemy import select

    return list(session.scalars(select(MachineVoteJob.id).where(
        MachineVoteJob.study_id == study.id, MachineVoteJob.status == "queued",
        MachineVoteJob.enqueued_at.is_(None))))


def status(session: Session, study: Study) -> dict:
    job = machine_votes.latest(session, study.id)
    n = machine_votes.count_votes(session, study.id)
    if job is None:
        return {"study_id": study.id, "job_id": None, "status": "none", "progress": 0.0, "progress_step": 0,
                "progress_total": 0, "error": None, "settings": None, "votes": n, "result": None, "note": NOTE}
    total = job.progress_total
    done = 1.0 if job.status == "succeeded" else (min(job.progress_step / total, 1.0) if total else 0.0)
    return {"study_id": study.id, "job_id": job.id, "status": job.status, "progress": round(done, 4),
            "progress_step": job.progress_step, "progress_total": total, "error": job.error,
            "settings": job.settings, "votes": n, "result": job.result, "note": NOTE}


def stats_votes(session: Session, study: Study) -> list[Vote]:
    """The machine votes as the statistics' votes: rater ids ``machine-NN``, A's side as ``robust_side``."""
    return [Vote(pair_id=r["pair_id"], rater_id=r["rater"], choice=r["choice"], study_id=study.id, label=r["label"],
                 class_name=r["class_name"], seed=r["seed"], robust_side=r["a_side"], arm_a=r.get("arm_a"),
                 arm_b=r.get("arm_b")) for r in machine_votes.vote_rows(session, study)]


def votes_csv(session: Session, study: Study) -> str:
    columns = CSV_COLUMNS + (ARM_COLUMNS if study.arms is not None else ())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in machine_votes.vote_rows(session, study):
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return buf.getvalue()


def results(session: Session, study: Study, *, n_boot: int, seed: int, n_boot_plan: int = 1000) -> dict:
    """The machine votes' statistics and power plan, labelled a proxy, and their agreement with the human
    answers when the study has both. Raises ``ValueError`` when there are no machine votes yet."""
    from app.stats.agreement import between_sources
    from app.stats.exclusions import apply_exclusions
    from app.survey import export

    votes = stats_votes(session, study)
    if not votes:
        raise ValueError("the study has no machine votes (POST .../machine-votes runs the pilot)")
    job = machine_votes.live_job(session, study.id) or machine_votes.latest(session, study.id)
    provenance = {"preset": study.preset, "study_id": study.id, "job_id": job.id if job else None,
                  "settings": job.settings if job else None, "judge_weights": (job.result or {}).get("judge_weights")
                  if job else None, "code_version": (job.result or {}).get("code_version") if job else None,
                  "summary": (job.result or {}).get("per_arm") if job else None}
    got = machine_stats.statistics(votes, method_a=study.method_a, method_b=study.method_b,
                                   arms=study.arm_names if study.arms is not None else None, design=study.design,
                                   seed=seed, n_boot=n_boot, provenance=provenance, n_boot_plan=n_boot_plan)
    human = export.stats_votes(study, export.vote_rows(session, study))
    kept = apply_exclusions(human, max_failures=study.max_attention_failures).kept
    agreement = None
    if kept:
        agreement = between_sources(machine_stats.pair_answer_counts(kept, study.method_a),
                                    machine_stats.pair_answer_counts(votes, study.method_a))
        agreement["human_answers"] = len(kept)
    return {"study_id": study.id, "note": NOTE, "limits": got["limits"], "stats": got["stats"],
            "power": got["power"], "agreement_with_humans": agreement}
