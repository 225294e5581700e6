"""Runs one machine-vote job: the machine judge answers a study's question for every real pair.

The judge (``model_core.evaluation.judge``) scores the study's own images (the PNGs its generation
jobs stored, not new samples), simulated raters answer each pair around its preference, and the
answers go to ``survey_machine_votes``. Votes are written per batch of pairs as the job goes, with
ids derived from (pair, rater) and ``ON CONFLICT DO NOTHING``: a worker killed half-way loses
nothing, and the re-run the reaper starts writes the same rows again. Progress (pairs answered)
is written at most every ``progress_interval_seconds``; each write checks for a cancel request.
"""
from __future__ import annotations

import logging
import time

from worker import jobs, machine_votes
from worker.config import Settings
from worker.db import session_factory
from worker.runner import _LeaseKeeper, new_owner
from worker.survey_models import MachineVoteJob

log = logging.getLogger("rguide.worker")

BATCH_PAIRS = 64


class Canceled(Exception):
    pass


def pair_key(preset: str, pair) -> str:
    """What seeds a pair's simulated raters: its preset, label, seed (and arms), as ``rguide pilot`` keys its
    pairs. Not the row id, which is random: two studies of the same design get the same machine votes."""
    key = f"{preset}-{pair.label}-{pair.seed}"
    return key if pair.arm_a is None else f"{key}-{pair.arm_a}-{pair.arm_b}"


def run_machine_vote_job(settings: Settings, job_id: str) -> str:
    Session = session_factory(settings.database_url)
    owner = new_owner()
    with Session() as s:
        job = jobs.claim(s, job_id, owner, settings.lease_seconds, settings.max_attempts, model=MachineVoteJob)
        if job is None:
            log.info("machine votes %s: nothing to do", job_id)
            return "skipped"
        study_id, jsettings = job.study_id, dict(job.settings)
    keeper = _LeaseKeeper(Session, [job_id], owner, settings, MachineVoteJob)
    keeper.start()
    try:
        return _run(settings, Session, job_id, study_id, jsettings, owner)
    except Canceled:
        with Session() as s:
            jobs.finish_canceled(s, [job_id], owner, MachineVoteJob)
        return "canceled"
    except Exception as exc:
        log.exception("machine votes %s failed", job_id)
        from model_core.errors import message

        with Session() as s:
            jobs.finish_failed(s, [job_id], owner, f"{type(exc).__name__}: {message(exc)}", MachineVoteJob)
        return "failed"
    finally:
        keeper.stop()


def _run(settings: Settings, Session, job_id: str, study_id: str, jsettings: dict, owner: str) -> str:
    import numpy as np
    import torch
    from sqlalchemy import select

    from model_core.analysis.inputs import decode_upload
    from model_core.evaluation.judge import JudgeSettings, simulated_answers
    from model_core.evaluation.metrics import as_model_images
    from model_core.evaluation.pilot import load_judge
    from model_core.presets import get_preset
    from model_core.provenance import code_version
    from worker.media import resolve
    from worker.models import Image
    from worker.survey_models import Study, SurveyPair

    t0 = time.monotonic()
    progress = jobs.throttled_progress(Session, job_id, owner, MachineVoteJob, settings.progress_interval_seconds,
                                       Canceled)
    judge_settings = JudgeSettings(**jsettings)
    with Session() as s:
        study = s.get(Study, study_id)
        if study is None or study.status not in ("open", "closed"):
            raise RuntimeError(f"study {study_id} is {study.status if study else 'gone'}: machine votes need the "
                               "study's images, which exist once it is open")
        preset_name, method_a, method_b = study.preset, study.method_a, study.method_b
        pairs = list(s.scalars(select(SurveyPair).where(SurveyPair.study_id == study_id,
                                                        SurveyPair.is_attention_check.is_(False))
                               .order_by(SurveyPair.ordinal)))
        s.expunge_all()
        image_ids = sorted({i for p in pairs for i in (p.image_a_id, p.image_b_id)})
        paths = dict(s.execute(select(Image.id, Image.path).where(Image.id.in_(image_ids))).all())
    missing = [i for i in image_ids if i not in paths]
    if missing:
        raise RuntimeError(f"{len(missing)} image(s) of the study are missing, e.g. {missing[0]}")
    preset = get_preset(preset_name)
    progress(0, len(pairs))
    judge, info = load_judge(preset_name, judge_settings)
    version = code_version()

    # Each image once (in a multi-arm study an image is in several pairs); labels from its pairs.
    label_of = {}
    for p in pairs:
        label_of[p.image_a_id] = label_of[p.image_b_id] = p.label
    u: dict[str, float] = {}
    hits: dict[str, bool] = {}
    realism: dict[str, float] = {}
    for i in range(0, len(image_ids), 256):
        chunk = image_ids[i:i + 256]
        pixels = np.stack([decode_upload(resolve(settings.media_dir, paths[iid]).read_bytes(),
                                         image_size=preset.image_size, channels=preset.in_channels) for iid in chunk])
        labels = torch.tensor([label_of[iid] for iid in chunk])
        scores = judge.score(as_model_images(pixels), labels)
        for k, iid in enumerate(chunk):
            u[iid] = float(scores["u"][k])
            hits[iid] = bool(scores["pred"][k] == labels[k].item())
            realism[iid] = float(scores["realism"][k])

    for i in range(0, len(pairs), BATCH_PAIRS):
        chunk = pairs[i:i + BATCH_PAIRS]
        answers = simulated_answers([u[p.image_a_id] for p in chunk], [u[p.image_b_id] for p in chunk],
                                    judge_settings, [pair_key(preset_name, p) for p in chunk])
        rows = []
        for p, per_pair in zip(chunk, answers):
            a, b = (p.arm_a, p.arm_b) if p.arm_a is not None else (method_a, method_b)
            for j, (answer, a_side) in enumerate(per_pair):
                rater = f"machine-{j + 1:02d}"
                b_side = "right" if a_side == "left" else "left"
                side = "same" if answer == "same" else (a_side if answer == "a" else b_side)
                rows.append({"id": machine_votes.vote_id(p.id, rater), "study_id": study_id, "pair_id": p.id,
                             "job_id": job_id, "rater": rater, "side": side,
                             "choice": {"a": a, "b": b, "same": "same"}[answer], "a_side": a_side,
                             "u_a": u[p.image_a_id], "u_b": u[p.image_b_id], "judge": judge_settings.to_dict(),
                             "judge_sha256": info["judge_weights"]["sha256"], "code_version": version,
                             "created_at": jobs.utcnow()})
        with Session() as s:
            machine_votes.store_votes(s, rows)
        progress(i + len(chunk), len(pairs))

    arms: dict[str, list[str]] = {}
    for p in pairs:
        for arm, iid in (((p.arm_a or method_a), p.image_a_id), ((p.arm_b or method_b), p.image_b_id)):
            arms.setdefault(arm, [])
            if iid not in arms[arm]:
                arms[arm].append(iid)
    result = {
        "n_pairs": len(pairs), "raters": judge_settings.raters, "settings": judge_settings.to_dict(),
        **info, "code_version": version, "seconds": round(time.monotonic() - t0, 3),
        "per_arm": {arm: {"images": len(ids), "label_accuracy": float(np.mean([hits[i] for i in ids])),
                          "inside_real_manifold": float(np.mean([realism[i] >= 1.0 for i in ids])),
                          "mean_u": float(np.mean([u[i] for i in ids]))} for arm, ids in arms.items()},
    }
    with Session() as s:
        done = machine_votes.complete(s, job_id, result)
    log.info("machine votes %s: %s in %.1f s", job_id, "succeeded" if done else "not stored",
             time.monotonic() - t0)
    if not done:
        raise Canceled()
    return "succeeded"
