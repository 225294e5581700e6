"""A study's life: created (its pairs queued as generation jobs), opened, closed.

Creating a study resolves every batch of its pairs with the resolver that
generation requests use (``model_core.generation_request``, with this
server's limits), plans the pairs (labels, seeds, attention checks) and
submits ordinary generation jobs: one ``pair`` job per batch of labels when
the two methods are the preset's comparison (robust and vanilla), else one
job per method per batch with the same labels and seeds. Nothing is stored
when anything is invalid.

The study opens when all its jobs have succeeded. Whoever reads the study
first after that (a researcher polling its status, a rater opening the
link) performs the transition; it is one guarded UPDATE, so two readers
cannot open it twice. Opening freezes the **manifest**: every pair's label,
seed, both image ids and SHA-256 hashes, the settings and the code version.
"""
from __future__ import annotations

import hashlib
import json
import random
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session

from app.survey import exits
from app.survey.arms import ArmPlan, check_body, resolve_arms
from app.validation import RequestInvalid, http_error, http_errors, job_spec, server_limits
from model_core.generation_request import RequestInvalid as CoreRequestInvalid
from model_core.generation_request import resolve_generation
from model_core.presets import PAIR, UnknownPresetError, get_preset
from model_core.provenance import code_version
from worker import jobs
from worker.config import Settings
from worker.ids import is_row_id
from worker.models import Image, Job
from worker.survey_models import Assignment, Rater, Study, SurveyPair, SurveyVote

# 2: attention checks from images outside the study (their kind and passing answer), the
# platform and exit codes, the rater-quality settings.
MANIFEST_VERSION = 2
# A multi-arm study's manifest adds settings.arms/design/reference_arm/pairs_per_item and items[] (same version:
# a classic study's manifest is unchanged).


class StudyStateError(Exception):
    """The study's status does not allow this (e.g. closing a study that is still generating)."""


def draw_labels(num_classes: int, n: int, seed: int) -> list[int]:
    """``n`` labels at random: without replacement, starting over (reshuffled) once every class was drawn.

    So 200 labels of 1000 classes are 200 distinct classes, as in the paper, and
    10 labels of 4 classes use every class at least twice. Reproducible from ``seed``.
    """
    rng = random.Random(f"rguide-survey-labels:{seed}")
    out: list[int] = []
    while len(out) < n:
        classes = list(range(num_classes))
        rng.shuffle(classes)
        out.extend(classes[: n - len(out)])
    return out


@dataclass
class Plan:
    preset: Any
    labels: list[int]
    seed: int
    label_source: str
    method_a: str
    method_b: str
    scales: dict[str, float]
    specs: list[tuple[int, jobs.JobSpec]]  # (first pair index, spec), in order
    steps: str
    sampler: str
    check_labels: list[int]  # the attention checks' labels: pairs len(labels)..., seeds after the real ones
    arm_plan: ArmPlan | None = None  # a multi-arm study (app.survey.arms)


def draw_check_labels(num_classes: int, n: int, seed: int) -> list[int]:
    """Labels of the attention checks: drawn on their own, so the real pairs' labels do not depend on them."""
    rng = random.Random(f"rguide-survey-checks:{seed}")
    return [rng.randrange(num_classes) for _ in range(n)]


def plan_study(body, settings: Settings) -> Plan:
    """Validate a ``StudyCreate`` and work out its jobs. Raises ``RequestInvalid`` naming every bad field."""
    try:
        preset = get_preset(body.preset)
    except UnknownPresetError as exc:
        raise RequestInvalid([http_error(("preset",), str(exc), body.preset)]) from None
    errors: list[dict[str, Any]] = check_body(body)
    a, b = body.method_a.lower(), body.method_b.lower()
    usable = [m for m in preset.methods if m != "none"]
    for field, method in () if body.arms is not None else (("method_a", a), ("method_b", b)):
        if method == "none":
            errors.append(http_error((field,), "unguided sampling cannot be a survey method here: the statistics "
                                         "reserve the name 'none' for 'no preference'", method))
        elif method not in usable:
            why = (preset.not_offered(method) if method in preset.unavailable
                   else f"not a guidance method of preset {preset.name!r}")
            errors.append(http_error((field,), f"method {method!r} is {why} (choose from {', '.join(usable)})",
                                     method))
    if a == b and body.arms is None:
        errors.append(http_error(("method_b",), f"method_b must differ from method_a (both are {a!r})", b))

    if body.labels is not None and body.num_pairs is not None:
        errors.append(http_error(("labels",), "give either num_pairs (labels drawn at random) or labels, not both",
                           body.labels))
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    labels: list[int] = []
    if body.labels is not None:
        label_source = "explicit"
        for i, raw in enumerate(body.labels):
            try:
                labels.append(preset.resolve_label(raw))
            except (ValueError, TypeError) as exc:
                errors.append(http_error(("labels", i), str(exc), raw))
    else:
        label_source = "random"
        labels = draw_labels(preset.num_classes, body.num_pairs or 200, seed)
    if body.machine_pilot is not None and preset.judge_network() is None:
        errors.append(http_error(("machine_pilot",), f"preset {preset.name!r} has no judge network for the "
                                 "machine-rater pilot (the digit presets demo and demo-uncond have one); for another "
                                 "preset run `rguide pilot --preset NAME --judge PATH` offline", None))
    if errors:
        raise RequestInvalid(errors)
    # Attention checks get images of their own (labels drawn apart, seeds after the real pairs'):
    # a check never shows an image the rater also judges in a real pair.
    n_checks = body.attention_checks_per_rater if body.attention_checks else 0
    check_labels = draw_check_labels(preset.num_classes, n_checks, seed)
    all_labels = labels + check_labels
    if body.arms is not None:
        arm_plan = resolve_arms(body, preset, settings, seed, all_labels)
        arms = arm_plan.arms
        return Plan(preset=preset, labels=labels, seed=seed, label_source=label_source, method_a=arms[0].name,
                    method_b=arms[1].name, scales={arms[0].name: arms[0].scale, arms[1].name: arms[1].scale},
                    specs=[(start, spec) for start, spec, _ in arm_plan.specs], steps=arms[0].steps,
                    sampler=arms[0].sampler, check_labels=check_labels, arm_plan=arm_plan)

    together = {a, b} == set(preset.pair_methods)
    per_job = max(1, settings.max_images_per_request // (2 if together else 1))
    scale_given = {m: s for m, s in ((a, body.scale_a), (b, body.scale_b)) if s is not None}
    # The resolver's field keys -> this request's fields.
    rename = {("scale", a): ("scale_a",), ("scale", b): ("scale_b",), ("guidance",): ("method_a",),
              ("class_labels",): ("labels",)}
    specs: list[tuple[int, jobs.JobSpec]] = []
    for start in range(0, len(all_labels), per_job):
        chunk = all_labels[start:start + per_job]
        requests = [(PAIR, preset.pair_methods)] if together else [(a, (a,)), (b, (b,))]
        for guidance, methods in requests:
            try:
                resolved = resolve_generation(
                    preset=preset.name, guidance=guidance, class_labels=chunk,
                    scale={m: scale_given[m] for m in methods if m in scale_given} or None,
                    steps=body.steps, seed=seed + start, sampler=body.sampler, limits=server_limits(settings))
            except CoreRequestInvalid as exc:
                # Every batch is checked the same way: report the first batch's problems once.
                raise http_errors(exc, rename) from None
            specs.append((start, job_spec(resolved)))
    first = specs[0][1]
    scales: dict[str, float] = {}
    for _, spec in specs:
        scales.update(spec.scales)
    return Plan(preset=preset, labels=labels, seed=seed, label_source=label_source, method_a=a, method_b=b,
                scales=scales, specs=specs, steps=first.steps, sampler=first.sampler, check_labels=check_labels)


def create_study(session: Session, body, settings: Settings, owner_key_id: str | None) -> Study:
    """Store the study, its pairs and its (queued) generation jobs. Commits. The caller sends the jobs."""
    plan = plan_study(body, settings)
    study_id = uuid.uuid4().hex
    rng = random.Random(f"rguide-survey-sides:{plan.seed}")
    job_ids: list[str] = []
    slot: dict[int, tuple[str, str, int]] = {}  # pair index -> (job of A, job of B, position in job)
    arm_slot: dict[tuple[int, str], tuple[str, int]] = {}  # (item, arm) -> (job, position in job)
    arm_groups = [group for _, _, group in plan.arm_plan.specs] if plan.arm_plan else None
    for n_spec, (start, spec) in enumerate(plan.specs):
        job = Job(id=jobs.new_job_id(), status="queued", preset=spec.preset, guidance=spec.guidance,
                       labels=list(spec.labels), seeds=list(spec.seeds), scales=dict(spec.scales),
                       steps=spec.steps, sampler=spec.sampler, num_steps=spec.num_steps,
                       num_images=spec.num_images, batch_key=spec.batch_key, progress_step=0,
                       progress_total=spec.num_steps, cancel_requested=False, attempts=0,
                       owner_key_id=owner_key_id, study_id=study_id)
        # Added in the study's own transaction (not jobs.create_job, which commits each
        # job): a study and its jobs are stored together or not at all.
        session.add(job)
        job_ids.append(job.id)
        if arm_groups is not None:
            for offset in range(len(spec.labels)):
                for arm in arm_groups[n_spec]:
                    arm_slot[(start + offset, arm)] = (job.id, offset)
            continue
        for offset in range(len(spec.labels)):
            a_job, b_job, _ = slot.get(start + offset, (None, None, offset))
            if spec.guidance == PAIR or spec.guidance == plan.method_a:
                a_job = job.id
            if spec.guidance == PAIR or spec.guidance == plan.method_b:
                b_job = job.id
            slot[start + offset] = (a_job, b_job, offset)

    n_checks = len(plan.check_labels)
    completion_code, completion_url, exit_codes = exits.resolve(
        body.platform, {k: v.model_dump() for k, v in (body.exits or {}).items()}, body.completion_code,
        body.completion_url)
    study = Study(
        id=study_id, title=body.title, status="generating", owner_key_id=owner_key_id, preset=plan.preset.name,
        method_a=plan.method_a, scale_a=plan.scales[plan.method_a], method_b=plan.method_b,
        scale_b=plan.scales[plan.method_b], steps=plan.steps, sampler=plan.sampler, seed=plan.seed,
        label_source=plan.label_source, question=body.question, instructions=body.instructions,
        consent=body.consent, raters_per_pair=body.raters_per_pair,
        pairs_per_rater=min(body.pairs_per_rater or len(plan.labels), len(plan.labels)),
        attention_checks=n_checks, max_attention_failures=body.max_attention_failures,
        min_answer_ms=body.min_answer_ms, completion_code=completion_code, completion_url=completion_url,
        platform=body.platform, exit_codes=exit_codes, completion_redirect=body.completion_redirect,
        assignment_timeout_seconds=body.assignment_timeout_seconds, check_kind=body.attention_check_kind,
        flag_same_share=body.flag_same_share, flag_fast_share=body.flag_fast_share,
        flag_min_answers=body.flag_min_answers, exclude_flags=list(body.exclude_flags), amendments=[],
        secret=_new_secret(), code_version=code_version()[:100], job_ids=job_ids,
        machine_pilot=body.machine_pilot.model_dump() if body.machine_pilot is not None else None)
    session.add(study)
    names = plan.preset.class_names
    if plan.arm_plan is not None:
        _arm_pairs(session, study, plan, body, arm_slot, rng)
        session.commit()
        return study
    for i, label in enumerate(plan.labels):
        a_job, b_job, pos = slot[i]
        session.add(SurveyPair(id=uuid.uuid4().hex, study_id=study_id, ordinal=i, label=label,
                               class_name=names[label], seed=plan.seed + i, is_attention_check=False,
                               job_a_id=a_job, job_b_id=b_job, job_position=pos, n_assigned=0,
                               a_left_first=rng.random() < 0.5))
    # Attention checks: their own images. Instructed checks ask for Left, then Right, alternately;
    # identical checks show one image (A's, then B's, alternately) on both sides.
    for k, label in enumerate(plan.check_labels):
        index = len(plan.labels) + k
        a_job, b_job, pos = slot[index]
        instructed = body.attention_check_kind == "instructed"
        session.add(SurveyPair(
            id=uuid.uuid4().hex, study_id=study_id, ordinal=index, label=label, class_name=names[label],
            seed=plan.seed + index, is_attention_check=True, job_a_id=a_job, job_b_id=b_job, job_position=pos,
            check_kind=body.attention_check_kind,
            check_answer=("left" if k % 2 == 0 else "right") if instructed else "same",
            check_method=None if instructed else (plan.method_a if k % 2 == 0 else plan.method_b),
            n_assigned=0, a_left_first=rng.random() < 0.5))
    session.commit()
    return study


def _arm_pairs(session: Session, study: Study, plan: Plan, body, arm_slot: dict, rng: random.Random) -> None:
    """A multi-arm study's rows: one per item and arm pair of the design, then the attention checks."""
    ap = plan.arm_plan
    names = plan.preset.class_names
    arm_names = [a.name for a in ap.arms]
    study.arms = [a.to_dict() for a in ap.arms]
    study.design = ap.design
    study.reference_arm = arm_names[ap.reference] if ap.design == "reference" else None
    study.pairs_per_item = ap.pairs_per_item
    ordinal = 0
    for i, label in enumerate(plan.labels):
        for x, y in ap.item_pairs[i]:
            (job_a, pos), (job_b, _) = arm_slot[(i, arm_names[x])], arm_slot[(i, arm_names[y])]
            session.add(SurveyPair(id=uuid.uuid4().hex, study_id=study.id, ordinal=ordinal, label=label,
                                   class_name=names[label], seed=plan.seed + i, is_attention_check=False,
                                   job_a_id=job_a, job_b_id=job_b, job_position=pos, arm_a=arm_names[x],
                                   arm_b=arm_names[y], n_assigned=0, a_left_first=rng.random() < 0.5))
            ordinal += 1
    n_real = ordinal
    study.pairs_per_rater = min(body.pairs_per_rater or n_real, n_real)
    instructed = body.attention_check_kind == "instructed"
    a, b = arm_names[0], arm_names[1]
    for k, label in enumerate(plan.check_labels):
        item = len(plan.labels) + k
        (job_a, pos), (job_b, _) = arm_slot[(item, a)], arm_slot[(item, b)]
        session.add(SurveyPair(
            id=uuid.uuid4().hex, study_id=study.id, ordinal=n_real + k, label=label, class_name=names[label],
            seed=plan.seed + item, is_attention_check=True, job_a_id=job_a, job_b_id=job_b, job_position=pos,
            arm_a=a, arm_b=b, check_kind=body.attention_check_kind,
            check_answer=("left" if k % 2 == 0 else "right") if instructed else "same",
            check_method=None if instructed else (a if k % 2 == 0 else b), n_assigned=0,
            a_left_first=rng.random() < 0.5))


def arm_method(study: Study, arm: str | None, fallback: str) -> str:
    """The guidance method whose image id an arm's image has (a classic study: the method itself)."""
    if study.arms is None or arm is None:
        return fallback
    return next(a["method"] for a in study.arms if a["name"] == arm)


def _new_secret() -> str:
    from app.survey.security import new_secret

    return new_secret()


# -- opening -----------------------------------------------------------------------------

def generation_progress(session: Session, study: Study) -> dict:
    rows = session.execute(select(Job.status, Job.progress_step, Job.progress_total)
                           .where(Job.id.in_(study.job_ids))).all()
    total = sum(max(r.progress_total, 1) for r in rows) or 1
    done = sum(max(r.progress_total, 1) if r.status == "succeeded" else min(r.progress_step, r.progress_total)
               for r in rows)
    return {"jobs": len(study.job_ids), "succeeded": sum(r.status == "succeeded" for r in rows),
            "failed": sum(r.status in ("failed", "canceled") for r in rows),
            "progress": round(done / total, 4)}


def refresh(session: Session, study: Study) -> Study:
    """Open a generating study whose jobs all succeeded (or fail it when one failed). Commits when it changes."""
    if study.status != "generating":
        return study
    found = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(study.job_ids)))}
    broken = [j for j in found.values() if j.status in ("failed", "canceled")]
    missing = [i for i in study.job_ids if i not in found]
    if broken or missing:
        why = (f"generation job {broken[0].id} {broken[0].status}: {broken[0].error or 'no error recorded'}"
               if broken else f"generation job {missing[0]} no longer exists")
        session.execute(update(Study).where(Study.id == study.id, Study.status == "generating")
                        .values(status="failed", error=why[:4000]))
        session.commit()
        session.refresh(study)
        return study
    if any(j.status != "succeeded" for j in found.values()):
        return study
    _open(session, study)
    session.refresh(study)
    return study


def _open(session: Session, study: Study) -> None:
    pairs = list(session.scalars(select(SurveyPair).where(SurveyPair.study_id == study.id)
                                 .order_by(SurveyPair.ordinal)))
    wanted: dict[str, tuple[str, int, str]] = {}
    for p in pairs:
        for job_id, method in ((p.job_a_id, arm_method(study, p.arm_a, study.method_a)),
                               (p.job_b_id, arm_method(study, p.arm_b, study.method_b))):
            iid = jobs.image_id(job_id, p.job_position, method)
            wanted[iid] = (job_id, p.job_position, method)
    images = {im.id: im for im in session.scalars(select(Image).where(Image.id.in_(list(wanted))))}
    lost = [i for i in wanted if i not in images]
    if lost:
        session.execute(update(Study).where(Study.id == study.id, Study.status == "generating").values(
            status="failed", error=f"{len(lost)} image(s) of succeeded jobs are missing, e.g. {lost[0]}"))
        session.commit()
        return
    now = jobs.utcnow()
    entries = []
    for p in pairs:
        im_a = images[jobs.image_id(p.job_a_id, p.job_position, arm_method(study, p.arm_a, study.method_a))]
        im_b = images[jobs.image_id(p.job_b_id, p.job_position, arm_method(study, p.arm_b, study.method_b))]
        if p.is_attention_check and p.check_method:
            # An identical-image check: the same image on both sides, the check's "A" and "B" are one file.
            im_a = im_b = im_a if p.check_method == (p.arm_a or study.method_a) else im_b
        values = dict(image_a_id=im_a.id, image_b_id=im_b.id, image_a_sha256=im_a.sha256,
                      image_b_sha256=im_b.sha256)
        session.execute(update(SurveyPair).where(SurveyPair.id == p.id).values(**values))
        entries.append(_manifest_pair(study, p, im_a, im_b))
    manifest = build_manifest(study, entries, now)
    res = session.execute(update(Study).where(Study.id == study.id, Study.status == "generating").values(
        status="open", opened_at=now, manifest=manifest, manifest_sha256=manifest_digest(manifest)))
    if res.rowcount != 1:  # another reader opened it first; its manifest stands
        session.rollback()
        return
    if study.machine_pilot is not None:
        # In the opening transaction: whoever opens the study queues its pilot, exactly once. The reaper
        # (or the next GET of the study) sends it to a worker.
        from worker import machine_votes

        session.add(machine_votes.new_job(study, study.machine_pilot, study.owner_key_id))
    session.commit()


def _image_entry(im: Image) -> dict:
    return {"image_id": im.id, "sha256": im.sha256, "method": im.method, "scale": im.scale,
            "width": im.width, "height": im.height, "generation_job": im.job_id}


def _manifest_pair(study: Study, p: SurveyPair, im_a: Image, im_b: Image) -> dict:
    entry = {"pair_id": p.id, "ordinal": p.ordinal, "label": p.label, "class_name": p.class_name, "seed": p.seed,
             "attention_check": p.is_attention_check,
             "a_left_first": p.a_left_first}
    if p.is_attention_check:
        entry["check_kind"] = p.check_kind
        entry["correct_answer"] = p.check_answer
    if p.is_attention_check and p.check_method:
        entry["check_method"] = p.check_method
        entry["image"] = _image_entry(im_a)
    elif p.arm_a is not None:
        entry["arms"] = [p.arm_a, p.arm_b]
        entry["images"] = {p.arm_a: _image_entry(im_a), p.arm_b: _image_entry(im_b)}
    else:
        entry["images"] = {study.method_a: _image_entry(im_a), study.method_b: _image_entry(im_b)}
    return entry


def build_manifest(study: Study, pairs: list[dict], opened_at) -> dict:
    preset = get_preset(study.preset)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "study_id": study.id,
        "title": study.title,
        "created_at": study.created_at.isoformat(),
        "opened_at": opened_at.isoformat(),
        "code_version": study.code_version,
        "preset": {"name": preset.name, "description": preset.description, "image_size": preset.image_size,
                   "num_classes": preset.num_classes},
        "settings": {
            "method_a": {"method": study.method_a, "scale": study.scale_a},
            "method_b": {"method": study.method_b, "scale": study.scale_b},
            "steps": study.steps, "sampler": study.sampler, "seed": study.seed,
            "seed_rule": "pair i uses seed + i for both of its images",
            "label_source": study.label_source, "raters_per_pair": study.raters_per_pair,
            "pairs_per_rater": study.pairs_per_rater, "attention_checks_per_rater": study.attention_checks,
            "max_attention_failures": study.max_attention_failures, "min_answer_ms": study.min_answer_ms,
            "question": study.question, "instructions": study.instructions, "consent": study.consent,
            "completion_code": study.completion_code, "platform": study.platform,
            "exits": exits.all_exits(study), "completion_redirect": study.completion_redirect,
            "attention_check_kind": study.check_kind,
            "attention_checks": "images from outside the study (labels drawn apart, seeds after the real "
                                "pairs'); instructed checks ask for Left and Right alternately, identical checks "
                                "show one image on both sides (Same passes)",
            "assignment_timeout_seconds": study.assignment_timeout_seconds,
            "flags": {"same_share": study.flag_same_share, "fast_share": study.flag_fast_share,
                      "min_answers": study.flag_min_answers, "exclude": list(study.exclude_flags)},
            "counterbalancing": "a new assignment shows method A on the side with fewer live assignments of "
                                "the pair; on a tie (always, without releases) the k-th assignment (k = 0, 1, ...) "
                                "shows A on the left when (k even) == a_left_first",
            "order": "least-assigned pairs first; ties in each rater's own random order "
                     "(sha256 of the rater's order_seed and the pair id)",
        },
        "generation_jobs": list(study.job_ids),
        "pairs": pairs,
    }
    if study.arms is not None:
        _arm_manifest(study, manifest)
    return manifest


def _arm_manifest(study: Study, manifest: dict) -> None:
    """A multi-arm study's manifest: the arms, the design and, per item, every arm's image and hash."""
    settings = manifest["settings"]
    for key in ("method_a", "method_b"):
        settings.pop(key)
    settings["arms"] = list(study.arms)
    settings["design"] = study.design
    settings["reference_arm"] = study.reference_arm
    settings["pairs_per_item"] = study.pairs_per_item
    settings["seed_rule"] = ("item i (a label) uses seed + i for the images of every arm: the same starting "
                             "noise and per-step noise in every arm")
    settings["counterbalancing"] = settings["counterbalancing"].replace("method A", "the pair's first arm (arm_a)")
    items: dict[tuple, dict] = {}
    for entry in manifest["pairs"]:
        if entry["attention_check"]:
            continue
        item = items.setdefault((entry["label"], entry["seed"]), {"label": entry["label"],
                                                                  "class_name": entry["class_name"],
                                                                  "seed": entry["seed"], "images": {}})
        item["images"].update(entry["images"])
    order = [a["name"] for a in study.arms]
    manifest["items"] = [{**item, "images": {a: item["images"][a] for a in order if a in item["images"]}}
                         for item in items.values()]


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8): anyone can recompute it."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- closing, reopening, amending -----------------------------------------------------------

def close_study(session: Session, study: Study) -> Study:
    """open -> closed (idempotent). Raises ``StudyStateError`` for a study that never opened."""
    if study.status == "closed":
        return study
    res = session.execute(update(Study).where(Study.id == study.id, Study.status == "open")
                          .values(status="closed", closed_at=jobs.utcnow()))
    session.commit()
    session.refresh(study)
    if res.rowcount != 1 and study.status != "closed":
        raise StudyStateError(f"study {study.id} is {study.status}; only an open study can be closed")
    return study


def _amend(study: Study, action: str, **details) -> None:
    # A new list: the JSON column is stored again only when it is assigned a new value.
    study.amendments = [*(study.amendments or []), {"at": jobs.utcnow().isoformat(), "action": action, **details}]


def reopen_study(session: Session, study: Study) -> Study:
    """closed -> open (idempotent); raters who were part-way continue. Logged in the amendments."""
    if study.status == "open":
        return study
    res = session.execute(update(Study).where(Study.id == study.id, Study.status == "closed")
                          .values(status="open", closed_at=None))
    if res.rowcount != 1:
        session.rollback()
        session.refresh(study)
        raise StudyStateError(f"study {study.id} is {study.status}; only a closed study can be reopened")
    session.refresh(study)
    _amend(study, "reopened")
    session.commit()
    return study


def update_study(session: Session, study: Study, changes: dict) -> Study:
    """Raise caps or change the time-out of a study that is not closed for good. Logged in the amendments.

    Raises ``StudyStateError`` for a failed study and ``RequestInvalid`` for a cap lowered.
    """
    if study.status == "failed":
        raise StudyStateError(f"study {study.id} failed; it cannot be changed")
    errors = []
    for field in ("raters_per_pair", "pairs_per_rater"):
        new = changes.get(field)
        if new is not None and new < getattr(study, field):
            errors.append(http_error((field,), f"{field} can only be raised (it is {getattr(study, field)})", new))
    if errors:
        raise RequestInvalid(errors)
    n_real = session.scalar(select(func.count()).where(SurveyPair.study_id == study.id,
                                                       SurveyPair.is_attention_check.is_(False))) or 0
    for field, new in changes.items():
        if new is None:
            continue
        if field == "pairs_per_rater":
            new = min(new, n_real)
        old = getattr(study, field)
        if new != old:
            setattr(study, field, new)
            _amend(study, "changed", field=field, old=old, new=new)
    session.commit()
    session.refresh(study)
    return study


def delete_participant(session: Session, study: Study, participant: str) -> bool:
    """Delete every record of one participant (a data-deletion request): their rater row, assignments and votes.

    ``participant`` is the platform id as stored (``prolific:ID``, ``mturk:ID``), the bare
    platform id, or the rater id. Their slots are given back first. Logged (without the id)
    in the amendments. Commits; False when there is no such participant.
    """
    from app.survey.assign import release_rater

    candidates = [participant, f"prolific:{participant}", f"mturk:{participant}"]
    rater = session.scalar(select(Rater).where(Rater.study_id == study.id,
                                               (Rater.external_id.in_(candidates)) | (Rater.id == participant)))
    if rater is None:
        return False
    release_rater(session, rater)
    session.execute(delete(SurveyVote).where(SurveyVote.rater_id == rater.id))
    session.execute(delete(Assignment).where(Assignment.rater_id == rater.id))
    session.execute(delete(Rater).where(Rater.id == rater.id))
    _amend(study, "participant data deleted on request", votes_deleted=True)
    session.commit()
    return True


# -- status -------------------------------------------------------------------------------

def get_study(session: Session, study_id: str) -> Study | None:
    return session.get(Study, study_id) if is_row_id(study_id) else None


def list_studies(session: Session, key, limit: int = 100) -> list[Study]:
    """Newest first, only those ``key`` may see (``app.survey.access``)."""
    from app.survey.access import studies_query

    return list(session.scalars(studies_query(key, limit)))


def links(study: Study, base_url: str = "") -> dict:
    api = f"/v1/surveys/{study.id}"
    return {"self": api, "rater_url": f"{base_url.rstrip('/')}/s/{study.id}",
            "researcher_page": f"/researcher/surveys/{study.id}", "manifest": f"{api}/manifest",
            "votes_csv": f"{api}/votes?format=csv", "votes_json": f"{api}/votes?format=json",
            "results": f"{api}/results", "report": f"{api}/report", "table2_csv": f"{api}/table2?format=csv",
            "table2_latex": f"{api}/table2?format=latex", "raters_csv": f"{api}/raters?format=csv",
            "raters_json": f"{api}/raters?format=json", "close": f"{api}/close", "reopen": f"{api}/reopen",
            "machine_votes": f"{api}/machine-votes", "machine_votes_csv": f"{api}/machine-votes?format=csv",
            "machine_results": f"{api}/machine-results", "machine_report": f"{api}/machine-report"}


def failed_attention_raters(session: Session, study: Study) -> set[str]:
    rows = session.execute(select(SurveyVote.rater_id, func.count()).where(
        SurveyVote.study_id == study.id, SurveyVote.attention_passed.is_(False)).group_by(SurveyVote.rater_id))
    return {r for r, n in rows if n > study.max_attention_failures}


def excluded_raters(session: Session, study: Study) -> set[str]:
    return set(session.scalars(select(Rater.id).where(Rater.study_id == study.id, Rater.excluded_at.is_not(None))))


def summary(session: Session, study: Study, *, base_url: str = "", with_pairs: bool = False,
            preferences: bool = False) -> dict:
    """The study's live status. Per-pair preference counts only once it is closed, or when asked for
    (a researcher watching them while collecting is tempted to stop early)."""
    from app.survey.assign import release_expired
    from app.survey.quality import counts, rater_rows

    if study.status == "open":
        release_expired(session, study)
    n_pairs = session.scalar(select(func.count()).where(SurveyPair.study_id == study.id,
                                                        SurveyPair.is_attention_check.is_(False))) or 0
    n_checks = session.scalar(select(func.count()).where(SurveyPair.study_id == study.id,
                                                         SurveyPair.is_attention_check.is_(True))) or 0
    raters = rater_rows(session, study)
    tally = counts(raters)
    out_raters = {r["rater_id"] for r in raters if r["excluded"]}
    real = session.execute(select(SurveyVote.rater_id, func.count()).where(
        SurveyVote.study_id == study.id, SurveyVote.is_attention_check.is_(False)).group_by(SurveyVote.rater_id))
    per_rater = dict(real.all())
    answers_all = sum(per_rater.values())
    usable = sum(n for r, n in per_rater.items() if r not in out_raters)
    too_fast = session.scalar(select(func.count()).where(SurveyVote.study_id == study.id,
                                                         SurveyVote.too_fast.is_(True))) or 0
    wanted = n_pairs * study.raters_per_pair
    out = {
        "id": study.id, "title": study.title, "status": study.status, "error": study.error,
        "preset": study.preset, "method_a": study.method_a, "scale_a": study.scale_a,
        "method_b": study.method_b, "scale_b": study.scale_b, "steps": study.steps, "sampler": study.sampler,
        "arms": list(study.arms) if study.arms is not None else None, "design": study.design,
        "reference_arm": study.reference_arm, "pairs_per_item": study.pairs_per_item,
        "seed": study.seed, "label_source": study.label_source, "num_pairs": n_pairs,
        "attention_check_pairs": n_checks, "raters_per_pair": study.raters_per_pair,
        "pairs_per_rater": study.pairs_per_rater, "attention_checks_per_rater": study.attention_checks,
        "max_attention_failures": study.max_attention_failures, "min_answer_ms": study.min_answer_ms,
        "question": study.question, "completion_code": study.completion_code, "platform": study.platform,
        "exits": exits.all_exits(study), "completion_redirect": study.completion_redirect,
        "attention_check_kind": study.check_kind, "assignment_timeout_seconds": study.assignment_timeout_seconds,
        "flag_same_share": study.flag_same_share, "flag_fast_share": study.flag_fast_share,
        "flag_min_answers": study.flag_min_answers, "exclude_flags": list(study.exclude_flags or []),
        "machine_pilot": study.machine_pilot, "code_version": study.code_version,
        "generation": generation_progress(session, study), "raters": tally["recruited"],
        "raters_completed": tally["completed"], "raters_excluded": tally["excluded"],
        "raters_flagged": tally["flagged"], "answers": usable, "answers_all": answers_all,
        "answers_wanted": wanted, "completion": round(min(1.0, usable / wanted), 4) if wanted else 0.0,
        "flagged_too_fast": too_fast, "failed_attention_raters": len(failed_attention_raters(session, study)),
        "manifest_sha256": study.manifest_sha256, "created_at": study.created_at, "opened_at": study.opened_at,
        "closed_at": study.closed_at, "amendments": list(study.amendments or []), "links": links(study, base_url),
        "pairs": None, "arm_pairs": None,
    }
    if with_pairs:
        out["pairs"] = pair_status(session, study, preferences=preferences or study.status == "closed")
        if study.arms is not None:
            out["arm_pairs"] = arm_pair_status(out["pairs"], study)
    return out


def arm_pair_status(pairs: list[dict], study: Study) -> list[dict]:
    """A multi-arm study's real pairs summed per arm pair: items, assignments, answers and (when shown) choices."""
    order = {name: i for i, name in enumerate(study.arm_names)}
    out: dict[tuple[str, str], dict] = {}
    for p in pairs:
        if p["attention_check"]:
            continue
        key = (p["arm_a"], p["arm_b"])
        entry = out.setdefault(key, {"arms": list(key), "n_items": 0, "assigned": 0, "answers": 0, "a_left": 0,
                                     "min_answers": None, "max_answers": None,
                                     "choices": None if p["choices"] is None else {key[0]: 0, key[1]: 0, "same": 0}})
        entry["n_items"] += 1
        entry["assigned"] += p["assigned"]
        entry["answers"] += p["answers"]
        entry["a_left"] += p["a_left"]
        entry["min_answers"] = p["answers"] if entry["min_answers"] is None else min(entry["min_answers"], p["answers"])
        entry["max_answers"] = p["answers"] if entry["max_answers"] is None else max(entry["max_answers"], p["answers"])
        if entry["choices"] is not None and p["choices"] is not None:
            for k, n in p["choices"].items():
                entry["choices"][k] = entry["choices"].get(k, 0) + n
    return sorted(out.values(), key=lambda e: (order.get(e["arms"][0], 99), order.get(e["arms"][1], 99)))


def pair_status(session: Session, study: Study, *, preferences: bool = True) -> list[dict]:
    counts = {}
    rows = session.execute(
        select(SurveyVote.pair_id, SurveyVote.choice, func.count(),
               func.sum(case((SurveyVote.a_side == "left", 1), else_=0)))
        .where(SurveyVote.study_id == study.id).group_by(SurveyVote.pair_id, SurveyVote.choice))
    for pair_id, choice, n, a_left in rows:
        entry = counts.setdefault(pair_id, {"answers": 0, "a_left": 0, "choices": {}})
        entry["answers"] += n
        entry["a_left"] += int(a_left or 0)
        entry["choices"][choice] = n
    out = []
    for p in session.scalars(select(SurveyPair).where(SurveyPair.study_id == study.id)
                             .order_by(SurveyPair.ordinal)):
        c = counts.get(p.id, {"answers": 0, "a_left": 0, "choices": {}})
        choices = {p.arm_a or study.method_a: 0, p.arm_b or study.method_b: 0, "same": 0, **c["choices"]}
        if p.is_attention_check:
            # What a check counts is passes and failures, not preferences: always shown.
            passed = session.scalar(select(func.count()).where(SurveyVote.pair_id == p.id,
                                                               SurveyVote.attention_passed.is_(True))) or 0
            choices = {"passed": passed, "failed": c["answers"] - passed}
        out.append({"pair_id": p.id, "ordinal": p.ordinal, "label": p.label, "class_name": p.class_name,
                    "seed": p.seed, "attention_check": p.is_attention_check, "assigned": p.n_assigned,
                    "live": p.n_a_left + p.n_a_right, "answers": c["answers"], "a_left": c["a_left"],
                    "choices": choices if (preferences or p.is_attention_check) else None,
                    "check_answer": p.check_answer, "arm_a": p.arm_a, "arm_b": p.arm_b})
    return out
