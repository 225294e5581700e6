"""A study's votes out of SQL: the full export (every recorded column) and the statistics' input.

The statistics themselves live in ``app.stats`` (pure functions); this
module only reads the database and hands them plain rows.
"""
from __future__ import annotations

import csv
import io

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.stats import Vote, compute_all, tidy_votes_csv
from app.stats.arms import compute_arms
from worker.survey_models import Rater, Study, SurveyPair, SurveyVote

COLUMNS = ("study_id", "vote_id", "pair_id", "pair_ordinal", "label", "class_name", "seed", "rater_id",
           "participant", "rater_source", "position", "side", "choice", "a_side", "left_method", "right_method",
           "response_ms", "client_ms", "server_ms", "images_loaded", "load_ms", "input", "too_fast",
           "attention_check", "check_answer", "attention_passed", "rater_failed_checks", "rater_excluded",
           "rater_exclusion_reason", "image_a_sha256", "image_b_sha256", "created_at")
# A multi-arm study's export adds the arms of each pair and of each side (a classic study's is unchanged).
ARM_COLUMNS = ("arm_a", "arm_b", "left_arm", "right_arm")


def vote_rows(session: Session, study: Study) -> list[dict]:
    """One dict per vote, ordered by time: everything recorded, with the pair and rater it belongs to."""
    q = (select(SurveyVote, SurveyPair, Rater)
         .join(SurveyPair, SurveyPair.id == SurveyVote.pair_id)
         .join(Rater, Rater.id == SurveyVote.rater_id)
         .where(SurveyVote.study_id == study.id)
         .order_by(SurveyVote.created_at, SurveyVote.id))
    rows = session.execute(q).all()
    failures: dict[str, int] = {}
    for v, _, _ in rows:
        if v.attention_passed is False:
            failures[v.rater_id] = failures.get(v.rater_id, 0) + 1
    out = []
    methods = {a["name"]: a["method"] for a in study.arms} if study.arms is not None else {}
    for v, p, r in rows:
        first, second = (p.arm_a, p.arm_b) if p.arm_a is not None else (study.method_a, study.method_b)
        if p.is_attention_check and p.check_method:
            left = right = p.check_method
        else:
            left = first if v.a_side == "left" else second
            right = second if v.a_side == "left" else first
        extra = {}
        if study.arms is not None:
            extra = {"arm_a": p.arm_a, "arm_b": p.arm_b, "left_arm": left, "right_arm": right}
            left, right = methods.get(left, left), methods.get(right, right)
        out.append({
            "study_id": study.id, "vote_id": v.id, "pair_id": p.id, "pair_ordinal": p.ordinal, "label": p.label,
            "class_name": p.class_name, "seed": p.seed, "rater_id": r.id, "participant": r.external_id,
            "rater_source": r.source, "position": v.position, "side": v.side, "choice": v.choice,
            "a_side": v.a_side, "left_method": left, "right_method": right, "response_ms": v.response_ms,
            "client_ms": v.client_ms, "server_ms": v.server_ms, "images_loaded": v.images_loaded,
            "load_ms": v.load_ms, "input": v.input, "too_fast": v.too_fast, "attention_check": v.is_attention_check,
            "check_answer": p.check_answer, "attention_passed": v.attention_passed,
            "rater_failed_checks": failures.get(r.id, 0) > study.max_attention_failures,
            "rater_excluded": r.excluded_at is not None, "rater_exclusion_reason": r.exclusion_reason,
            "image_a_sha256": p.image_a_sha256, "image_b_sha256": p.image_b_sha256,
            "created_at": v.created_at.isoformat(), **extra,
        })
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rows_csv(rows: list[dict], *, multi_arm: bool = False) -> str:
    columns = COLUMNS + (ARM_COLUMNS if multi_arm else ())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in columns])
    return buf.getvalue()


def stats_votes(study: Study, rows: list[dict]) -> list[Vote]:
    """The statistics' view of the votes. ``robust_side`` is the side of method A, whatever A is called.

    Raters excluded for failed attention checks are left to the statistics' own rule (each
    check vote says whether it passed), so the report counts them as such; raters excluded
    for another reason (a flag, the researcher) have their votes flagged ``excluded``.
    """
    from app.survey.quality import FAILED_CHECKS

    return [Vote(pair_id=r["pair_id"], rater_id=r["rater_id"], choice=r["choice"], study_id=study.id,
                 label=r["label"], class_name=r["class_name"], seed=r["seed"], robust_side=r["a_side"],
                 position=r["position"], response_ms=r["response_ms"], created_at=r["created_at"],
                 is_attention_check=r["attention_check"],
                 excluded=r["rater_excluded"] and r["rater_exclusion_reason"] != FAILED_CHECKS,
                 attention_passed=r["attention_passed"], arm_a=r.get("arm_a"), arm_b=r.get("arm_b")) for r in rows]


def tidy_csv(session: Session, study: Study) -> str:
    """The statistics' tidy format (readable by ``rguide stats`` and ``app.stats.read_votes_csv``)."""
    return tidy_votes_csv(stats_votes(study, vote_rows(session, study)),
                          max_attention_failures=study.max_attention_failures)


def results(session: Session, study: Study, *, n_boot: int, seed: int) -> dict:
    """``app.stats.compute_all`` on this study's votes, with its own methods and exclusion rule.

    Raises ``ValueError`` when there is nothing to analyse yet.
    """
    votes = stats_votes(study, vote_rows(session, study))
    if study.arms is not None:
        stats = compute_arms(votes, seed=seed, n_boot=n_boot, arms=study.arm_names,
                             max_attention_failures=study.max_attention_failures, fast_ms=float(study.min_answer_ms))
        stats["study"] = {"id": study.id, "title": study.title, "status": study.status,
                          "manifest_sha256": study.manifest_sha256, "code_version": study.code_version,
                          "design": study.design, "arms": list(study.arms)}
        return stats
    stats = compute_all(votes, seed=seed, n_boot=n_boot, method_a=study.method_a, method_b=study.method_b,
                        max_attention_failures=study.max_attention_failures, fast_ms=float(study.min_answer_ms))
    stats["study"] = {"id": study.id, "title": study.title, "status": study.status,
                      "manifest_sha256": study.manifest_sha256, "code_version": study.code_version}
    return stats


def rater_csv(rows: list[dict]) -> str:
    """The per-rater table (``app.survey.quality.rater_rows``) as CSV: what a platform approval needs."""
    from app.survey.quality import RATER_COLUMNS

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RATER_COLUMNS)
    for row in rows:
        writer.writerow([_rater_cell(row[c]) for c in RATER_COLUMNS])
    return buf.getvalue()


def _rater_cell(value) -> str:
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return _cell(value)
