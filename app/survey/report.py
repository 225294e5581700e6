"""A study's report as a paper needs it: the statistics page plus who, what, when, how many and a methods paragraph.

``app.stats.report.render_report`` draws the statistics; this module adds
what only the survey knows: the study id and manifest hash, the arms and
scales, sampler, steps, preset and code version, the dates, the raters
recruited / excluded (with reasons) / analysed, the changes made after the
study opened, an auto-written methods paragraph, and a "provisional" banner
while the study still collects. Pair images are embedded as ``data:`` URLs,
so a saved copy of the page is whole.
"""
from __future__ import annotations

import base64
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.survey import exits
from app.survey.quality import FLAGS, counts, rater_rows
from model_core.presets import UnknownPresetError, get_preset
from worker import media
from worker.config import Settings
from worker.db import utcnow
from worker.models import Image
from worker.survey_models import Study, SurveyPair

PLATFORM_NAMES = {"prolific": "Prolific", "mturk": "Amazon Mechanical Turk", "none": "a direct link"}


def _day(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC") if when else "–"


def _date(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d") if when else "(still open)"


def embedded_images(session: Session, study: Study, settings: Settings, pair_ids: set[str]) -> dict:
    """pair id -> (data URL of A's image, data URL of B's image), for the pairs the report shows."""
    if not pair_ids:
        return {}
    pairs = session.scalars(select(SurveyPair).where(SurveyPair.study_id == study.id,
                                                     SurveyPair.id.in_(pair_ids)))
    out = {}
    for p in pairs:
        urls = []
        for image_id in (p.image_a_id, p.image_b_id):
            row = session.get(Image, image_id) if image_id else None
            try:
                data = media.resolve(settings.media_dir, row.path).read_bytes() if row else None
            except OSError:
                data = None
            if data is None:
                break
            urls.append("data:image/png;base64," + base64.b64encode(data).decode("ascii"))
        if len(urls) == 2:
            out[p.id] = tuple(urls)
    return out


def methods_paragraph(study: Study, stats: dict, tally: dict, preset_description: str) -> str:
    a, b = study.method_a, study.method_b
    n_real = stats["n_pairs"]
    labels = ("labels drawn at random (without replacement while classes last) with the study seed "
              f"{study.seed}" if study.label_source == "random" else "labels chosen by the researcher")
    checks = ""
    if study.attention_checks:
        kind = ("instructed checks (a pair of images from outside the study with an instruction to choose "
                "Left or Right)" if study.check_kind == "instructed"
                else "identical-image checks (one image from outside the study on both sides; Same passes)")
        allowed = study.max_attention_failures
        failing = ("raters who failed any check" if allowed == 0
                   else f"raters who failed more than {allowed} check{'s' if allowed != 1 else ''}")
        checks = (f" Each rater also saw {study.attention_checks} attention check"
                  f"{'s' if study.attention_checks != 1 else ''} ({kind}) at random positions other than the "
                  f"first; {failing} were excluded and their session ended.")
    flagged = ""
    if study.exclude_flags:
        flagged = (" Raters flagged for " + ", ".join(FLAGS[f] for f in study.exclude_flags)
                   + " were also excluded.")
    reasons = "; ".join(f"{why.replace('_', ' ')}: {n}" for why, n in tally["excluded_by_reason"].items())
    n_out = tally["excluded"]
    excluded = f"{n_out} {'was' if n_out == 1 else 'were'} excluded ({reasons})" if n_out else "none was excluded"
    rpp = stats["raters_per_pair"]
    primary = stats["primary"]
    return (
        f"We compared {a} guidance (scale {study.scale_a:g}) with {b} guidance (scale {study.scale_b:g}) on the "
        f"{study.preset} preset ({preset_description.rstrip('.')}), sampling with {study.sampler} over "
        f"{study.steps} steps. For each of {n_real} class labels ({labels}), the two images of a pair were "
        f"generated from the same seed (pair i: seed + i), so they share every noise draw and differ only in "
        f"the guidance. Raters were recruited through {PLATFORM_NAMES.get(study.platform, study.platform)} "
        f"between {_date(study.opened_at)} and {_date(study.closed_at)}. Each rater saw up to "
        f"{study.pairs_per_rater} pairs, one at a time, with the least-answered pairs first (ties in a random "
        f"order of their own) and the side of each method counterbalanced per pair, and answered "
        f"\u201c{study.question}\u201d with Left, Right or Same; each pair was shown to at most "
        f"{study.raters_per_pair} raters.{checks}{flagged} Answers given faster than {study.min_answer_ms} ms "
        f"after the pair was served were flagged. Of {tally['recruited']} raters who consented, {excluded}; "
        f"the analysis uses {stats['n_answers']} answers from {stats['n_raters']} raters "
        f"({rpp['min']}\u2013{rpp['max']} per pair, mean {rpp['mean']:.1f}). The primary analysis, fixed in "
        f"advance, is the exact two-sided sign test over pairs at the 50% threshold (pairs preferred for {a} "
        f"versus {b}, ties left out): {primary['n_a']} versus {primary['n_b']} pairs, p = "
        f"{_p(primary['p'])}. Intervals are exact (Clopper\u2013Pearson) for pair shares and from a two-way "
        f"cluster bootstrap over pairs and raters for answer shares. Study {study.id}; frozen manifest SHA-256 "
        f"{study.manifest_sha256}; code version {study.code_version}."
    )


def _p(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def _amendment(entry: dict) -> str:
    when = entry.get("at", "")[:16].replace("T", " ")
    if entry.get("action") == "changed":
        return f"{when} UTC: {entry['field']} changed from {entry['old']} to {entry['new']}"
    return f"{when} UTC: {entry.get('action')}"


def study_header(session: Session, study: Study, stats: dict) -> dict:
    """What ``render_report(..., study=)`` shows above the statistics."""
    try:
        description = get_preset(study.preset).description
    except UnknownPresetError:
        description = "preset no longer installed"
    tally = counts(rater_rows(session, study))
    analysed = stats["n_raters"]
    arms = (f"A: {study.method_a} (scale {study.scale_a:g}); B: {study.method_b} (scale {study.scale_b:g})"
            if study.arms is None else "; ".join(
                f"{a['name']}: {a['method']}" + (f" (scale {a['scale']:g})" if a["method"] != "none" else "")
                + (f", {a['sampler']} {a['steps']}" if (a["sampler"], a["steps"]) != (study.sampler, study.steps)
                   else "") for a in study.arms)
            + f"; design {study.design}" + (f" (reference {study.reference_arm})" if study.reference_arm else "")
            + (f" ({study.pairs_per_item} arm pairs per item)" if study.pairs_per_item else ""))
    facts = [
        ("Study", study.id),
        ("Manifest SHA-256", study.manifest_sha256 or "–"),
        ("Arms", arms),
        ("Sampler and steps", f"{study.sampler}, {study.steps}"),
        ("Preset", f"{study.preset} ({description})"),
        ("Seed", f"{study.seed} (pair i uses seed + i for both images)" if study.arms is None else
                 f"{study.seed} (item i uses seed + i for the images of every arm)"),
        ("Code version", study.code_version),
        ("Dates", f"created {_day(study.created_at)}; opened {_day(study.opened_at)}; "
                  + (f"closed {_day(study.closed_at)}" if study.closed_at else "still open")),
        ("Platform", PLATFORM_NAMES.get(study.platform, study.platform)),
        ("Report made", _day(utcnow())),
    ]
    reasons = "; ".join(f"{why.replace('_', ' ')}: {n}" for why, n in tally["excluded_by_reason"].items())
    rows = [
        ("Recruited (consented)", tally["recruited"], ""),
        ("Finished", tally["completed"] + tally["no_pairs"],
         f"{tally['no_pairs']} found no pair left" if tally["no_pairs"] else ""),
        ("Did not finish", tally["abandoned"] + tally["in_progress"] + tally["closed_midway"],
         f"{tally['abandoned']} abandoned, {tally['closed_midway']} stopped by the closing, {tally['in_progress']} "
         "still answering; their answers count"),
        ("Excluded", tally["excluded"], reasons),
        ("Analysed", analysed, f"{stats['n_answers']} answers on {stats['n_pairs']} pairs"),
    ]
    provisional = None
    if study.status != "closed":
        provisional = (f"this study is still {study.status}: the numbers below will change as answers come in. "
                       "Close the study before reporting them.")
    methods = methods_paragraph(study, stats, tally, description) if study.arms is None else None
    return {"facts": facts, "counts": rows, "methods": methods,
            "amendments": [_amendment(m) for m in (study.amendments or [])], "provisional": provisional,
            "exits": exits.all_exits(study), "machine": machine_section(session, study)}


def machine_lines(got: dict, *, with_humans: bool = True) -> list[str]:
    """The machine pilot's results (``app.survey.machine.results``) in a few sentences for pages and reports.

    ``with_humans=False`` leaves out the agreement with the human answers: while a study collects, its page hides
    the human counts, and per-pair agreement with the machine's majorities would give part of them away.
    """
    s, power = got["stats"], got["power"]
    lines = [f"{s['n_answers']} machine answers on {s['n_pairs']} pairs from {s['n_raters']} simulated raters."]
    for entry in (s.get("arm_pairs") or [s]):
        a, b = (entry["arms"] if "arms" in entry and isinstance(entry["arms"], list) and len(entry["arms"]) == 2
                else (entry["methods"]["a"], entry["methods"]["b"]))
        pr = entry["primary"]
        shares = entry.get("answer_shares") or {}
        lines.append(f"{a} vs {b}: sign test over pairs {pr['n_a']} : {pr['n_b']} (no preference {pr['n_none']}), "
                     f"p = {_p(pr['p'])}; answers {a} {_pct(shares.get(a))}, {b} {_pct(shares.get(b))}, "
                     f"same {_pct(shares.get('same'))}.")
    plans = power.get("plans")
    pilot = power.get("pilot") or {}
    if isinstance(plans, list) and plans:
        if "pairs_pair_level" in plans[0]:
            row = next((r for r in plans if r.get("pairs_pair_level")), None)
            if row:
                lines.append(f"Power planner (ICC {_num(pilot.get('icc'))}, A's share of side answers "
                             f"{_pct(pilot.get('share_a_among_sides'))}): {row['pairs_pair_level']} pairs with "
                             f"{row['raters_per_pair']} raters each for 80% power at the pair level.")
        else:
            row = next((r for r in plans if r.get("n_items")), None)
            if row:
                lines.append(f"Power planner (ranking, half-width {power.get('width')} per arm): {row['n_items']} "
                             f"items with {row['raters_per_pair']} raters per pair.")
    else:
        lines.append("Power planner: no plan (the machine votes show no preference to detect, or their ICC is "
                     "undefined).")
    ag = got.get("agreement_with_humans") if with_humans else None
    if ag:
        lines.append(f"Agreement with the human answers on {ag['pairs_compared']} pairs (per-pair majorities): "
                     f"{_pct(ag['majority_agreement'])} agree, Gwet's AC1 {_num(ag['gwet_ac1'])}, Krippendorff's "
                     f"alpha {_num(ag['krippendorff_alpha'])}; mean |difference| of A's share "
                     f"{_num(ag['share_difference'])}.")
    return lines


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def machine_section(session: Session, study: Study, *, with_humans: bool = True) -> dict | None:
    """The report's "machine raters: a proxy" section, when the study has machine votes; else None.

    ``with_humans``: whether to include the agreement with the human answers (see ``machine_lines``).
    """
    from app.survey import machine

    try:
        # Shown on a page that refreshes every 10 s: no answer bootstrap, and a short one for the ranking's plan
        # (the full numbers are at .../machine-results and .../machine-report).
        got = machine.results(session, study, n_boot=0, seed=0, n_boot_plan=200)
    except ValueError:
        return None
    return {"note": got["note"], "limits": got["limits"], "lines": machine_lines(got, with_humans=with_humans),
            "link": f"/v1/surveys/{study.id}/machine-report"}


def machine_report_html(study: Study, got: dict) -> str:
    """The machine votes' statistics as the survey's report, headed by what they are and are not."""
    prov = got["stats"].get("machine_pilot") or {}
    judge = prov.get("judge_weights") or {}
    facts = [("Study", study.id), ("Preset", study.preset),
             ("Judge settings", ", ".join(f"{k} {v}" for k, v in (prov.get("settings") or {}).items())),
             ("Judge network", f"{judge.get('path', '–')} (sha256 {judge.get('sha256', '–')})"),
             ("Code version", prov.get("code_version") or "–"), ("Report made", _day(utcnow()))]
    counts = [("Machine raters per pair", (prov.get("settings") or {}).get("raters", "–"), "simulated, not people"),
              ("Pairs judged", got["stats"]["n_pairs"], "the study's real pairs, its own images")]
    header = {"facts": facts, "counts": counts, "methods": " ".join(got["limits"]), "amendments": [],
              "provisional": None, "exits": {},
              "machine": {"note": got["note"], "limits": got["limits"], "lines": machine_lines(got), "link": None}}
    title = f"Machine raters (a proxy): {study.title}"
    if study.arms is not None:
        from app.stats.arms_report import render_arms_report

        return render_arms_report(got["stats"], title=title, study=header)
    from app.stats.report import render_report

    return render_report(got["stats"], title=title, study=header)
