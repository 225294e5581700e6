"""The statistics of machine votes (the machine-rater pilot): the survey's own functions, labelled a proxy.

The votes come from a machine judge and simulated raters (``model_core.evaluation.judge``), either
``rguide pilot``'s own pairs or a study's pairs (``survey_machine_votes``). The same pure functions
as for people run on them: the threshold table and sign tests (``compute_all``), or every arm pair
and the ranking (``compute_arms``) for more than two arms, and the power planner on their pilot
summary. Everything returned carries ``machine_pilot`` (what produced the votes) and ``LIMITS``,
and nothing here ever receives a human vote: the two sets meet only in
``app.stats.agreement.between_sources``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from app.stats.summary import DEFAULT_N_BOOT
from app.stats.votes import SAME, Vote

DEFAULT_PLAN_RATERS = (5, 10, 15, 20, 25, 30, 40)
ARMS_WIDTH = 0.25
LIMITS = (
    "These answers are a machine's, not people's: a judge network's log-probability of the requested class "
    "plus a feature-space realism score, with simulated raters' noise around it.",
    "The judge is an ordinary (non-robust) CNN: adversarial perturbations, which guidance can produce, fool "
    "it, and it is blind to what its features ignore (stroke texture, faint artefacts people notice).",
    "The raters' noise, the 'same' margin and the realism weight are assumptions, not measurements of "
    "people: the agreement, ICC and 'same' share of these votes follow from them.",
    "Use it to see whether the arms differ in ways the judge can see and to size a study; replace it by a "
    "small human pilot before fixing the study's size.",
)


def statistics(votes: Sequence[Vote], *, method_a: str, method_b: str, arms: Sequence[str] | None = None,
               design: str | None = None, seed: int = 0, n_boot: int = DEFAULT_N_BOOT,
               plan_raters: Sequence[int] = DEFAULT_PLAN_RATERS, provenance: dict | None = None,
               n_boot_plan: int = 1000) -> dict:
    """``{"stats", "power", "limits"}`` of machine votes; ``stats["machine_pilot"]`` is ``provenance``.

    Two arms: ``compute_all`` and the planning table from the votes' pilot summary (share, ICC, same
    share). More arms (``arms`` given): ``compute_arms`` and the ranking planner at a half-width of
    0.25 per arm, from the design effect of ``n_boot_plan`` ranking bootstraps. Raises ``ValueError``
    when there is nothing to analyse.
    """
    if arms is not None:
        out = _arms(votes, arms, design or "all_pairs", seed=seed, n_boot=n_boot, plan_raters=plan_raters,
                    n_boot_plan=n_boot_plan)
    else:
        out = _two(votes, method_a, method_b, seed=seed, n_boot=n_boot, plan_raters=plan_raters)
    out["stats"]["machine_pilot"] = dict(provenance or {})
    out["limits"] = list(LIMITS)
    return out


def _two(votes, a, b, *, seed, n_boot, plan_raters) -> dict:
    from app.stats import power as pw
    from app.stats.summary import compute_all
    from app.stats.tables import pair_counts

    stats = compute_all(votes, seed=seed, n_boot=n_boot, method_a=a, method_b=b)
    pilot = pw.pilot_summary(pair_counts(list(votes), a, b))
    share, icc, same = pilot.get("share_a_among_sides"), pilot.get("icc"), pilot.get("same_share") or 0.0
    plan = None
    if share is not None and icc is not None and share != 0.5:
        try:
            plan = pw.planning_table(share, icc, raters=list(plan_raters), same_share=same)
        except ValueError as exc:
            plan = {"error": str(exc)}
    return {"stats": stats, "power": {"pilot": pilot, "plans": plan}}


def _arms(votes, arms, design, *, seed, n_boot, plan_raters, n_boot_plan) -> dict:
    from app.stats import power_arms as pa
    from app.stats.arms import compute_arms, oriented_votes, rank_votes

    names = list(arms)
    stats = compute_arms(votes, seed=seed, n_boot=n_boot, arms=names)
    order, kept, _ = oriented_votes(list(votes), names)
    fit_items = rank_votes([replace(v, rater_id="all") for v in kept], order, n_boot=n_boot_plan, seed=seed)
    fit_report = rank_votes(kept, order, n_boot=n_boot_plan, seed=seed)
    m_pilot = len(kept) / max(len({v.pair_id for v in kept}), 1)
    pilot = pa.pilot_design_effect(fit_items, fit_report, stats["ranking"]["exists"], m_pilot)
    plans = None
    if pilot["available"]:
        plans = pa.plan_ranking(pilot["theta"], math.log(pilot["nu"]), width=ARMS_WIDTH, design=design,
                                raters=list(plan_raters), rho=pilot["rho"], report_factor=pilot["report_factor"])
    return {"stats": stats, "power": {"pilot": pilot, "width": ARMS_WIDTH, "plans": plans}}


def pair_answer_counts(votes: Sequence[Vote], method_a: str | None = None) -> dict[str, tuple[int, int, int]]:
    """pair id -> (answers for the pair's A, for its B, "same"); A is ``arm_a`` when votes carry arms."""
    out: dict[str, list[int]] = {}
    for v in votes:
        first = v.arm_a if v.arm_a is not None else method_a
        row = out.setdefault(str(v.pair_id), [0, 0, 0])
        row[2 if v.choice == SAME else 0 if v.choice == first else 1] += 1
    return {k: tuple(c) for k, c in out.items()}
