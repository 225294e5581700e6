"""Studies with more than two arms: the arms resolved against the preset, their jobs, and the pair rows.

An *item* is one label and seed (item i uses ``seed + i``, as a classic pair
does). Every arm's image of an item is made by an ordinary generation job with
the same labels and seeds, so every arm starts from the same x_T and draws the
same per-step noise (``model_core`` gives each sample its own generator,
whatever batch it is in). Two arms that are the preset's comparison methods
with the same steps and sampler share one ``pair`` job (one UNet pass per
step for both); every other arm gets a job of its own, and all jobs use the
same chunks of labels, so an item has the same position in each.

The design (``model_core.designs``) says which arm pairs each item is shown
with; each becomes a ``SurveyPair`` row with ``arm_a``/``arm_b``, and the
assignment, counterbalancing, caps and attention checks of two-arm studies
then apply to those rows unchanged: least-assigned rows first keeps every arm
pair on every seed within one rater of the others, and each row alternates
the side of its first arm.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from app.validation import RequestInvalid, http_error, http_errors, job_spec, server_limits
from model_core.designs import DEFAULT_DESIGN, item_pairs
from model_core.generation_request import RequestInvalid as CoreRequestInvalid
from model_core.generation_request import resolve_generation
from model_core.presets import NO_GUIDANCE, PAIR
from worker import jobs
from worker.config import Settings

RESERVED = ("same", "none", PAIR)  # names the statistics and the generation API use for other things
UNGUIDED = "unguided"


@dataclass(frozen=True)
class ResolvedArm:
    name: str
    method: str
    scale: float
    steps: str
    sampler: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "scale": self.scale, "steps": self.steps,
                "sampler": self.sampler}


@dataclass
class ArmPlan:
    arms: list[ResolvedArm]
    design: str
    reference: int
    pairs_per_item: int | None
    # (first item index, spec, arm names the job makes, in the job's method order)
    specs: list[tuple[int, jobs.JobSpec, tuple[str, ...]]]
    item_pairs: list[list[tuple[int, int]]]


def check_body(body) -> list[dict]:
    """Cross-field rules of a multi-arm request, each naming its field."""
    errors = []
    if body.arms is None:
        for name in ("design", "reference_arm", "pairs_per_item"):
            if getattr(body, name) is not None:
                errors.append(http_error((name,), f"{name} needs arms (a design says which pairs of arms are "
                                                  "shown)", getattr(body, name)))
        return errors
    for name in ("method_a", "method_b", "scale_a", "scale_b"):
        if name in body.model_fields_set:
            errors.append(http_error((name,), f"give either arms or {name}, not both", getattr(body, name)))
    design = body.design or DEFAULT_DESIGN
    if body.reference_arm is not None and design != "reference":
        errors.append(http_error(("reference_arm",), "reference_arm belongs to the 'reference' design",
                                 body.reference_arm))
    if body.pairs_per_item is not None and design != "balanced_incomplete":
        errors.append(http_error(("pairs_per_item",), "pairs_per_item belongs to the 'balanced_incomplete' design",
                                 body.pairs_per_item))
    return errors


def _default_names(preset, arms: list[tuple[str | None, str, float]]) -> list[str]:
    """Names for unnamed arms: the preset's arm of that method and scale, else the method ('unguided' for
    'none'); method@scale where two arms would otherwise share a name."""
    def candidate(method: str, scale: float) -> str:
        for arm in preset.arms.values():
            if arm.method == method and arm.scale == scale and arm.name not in RESERVED:
                return arm.name
        return UNGUIDED if method == NO_GUIDANCE else method

    first = [name or candidate(m, s) for name, m, s in arms]
    taken = Counter(first)
    return [name if given or taken[name] == 1 or m == NO_GUIDANCE else f"{m}@{s:g}"
            for name, (given, m, s) in zip(first, arms)]


def resolve_arms(body, preset, settings: Settings, seed: int, all_labels: list[int]) -> ArmPlan:
    """Validate the arms and design and work out their jobs. Raises ``RequestInvalid`` naming every bad field."""
    errors: list[dict] = []
    methods = list(preset.methods)
    raw = body.arms
    for i, arm in enumerate(raw):
        m = arm.method.lower()
        if m not in methods:
            errors.append(http_error(("arms", i, "method"), f"method {m!r} is {preset.not_offered(m)} "
                                     f"(choose from {', '.join(methods)})", arm.method))
        elif m == NO_GUIDANCE and arm.scale is not None:
            errors.append(http_error(("arms", i, "scale"), "an unguided arm has no scale", arm.scale))
    if errors:
        raise RequestInvalid(errors)
    limits = server_limits(settings)
    found: list[tuple[str, float, str, str]] = []
    for i, arm in enumerate(raw):
        m = arm.method.lower()
        try:
            one = resolve_generation(preset=preset.name, guidance=m, class_labels=all_labels[:1] or [0],
                                     scale=None if m == NO_GUIDANCE else arm.scale,
                                     steps=arm.steps if arm.steps is not None else body.steps,
                                     sampler=arm.sampler or body.sampler, seed=seed, limits=limits)
        except CoreRequestInvalid as exc:
            rename = {("scale", m): ("arms", i, "scale"), ("scale",): ("arms", i, "scale"),
                      ("steps",): ("arms", i, "steps"), ("sampler",): ("arms", i, "sampler")}
            raise http_errors(exc, rename) from None
        scale = float(one.scales.get(m, 0.0)) if m != NO_GUIDANCE else 0.0
        found.append((m, scale, one.steps, one.sampler))
    names = _default_names(preset, [(arm.name, m, scale) for arm, (m, scale, _, _) in zip(raw, found)])
    resolved = [ResolvedArm(name=name, method=m, scale=scale, steps=steps, sampler=sampler)
                for name, (m, scale, steps, sampler) in zip(names, found)]
    seen: dict[str, int] = {}
    settings_seen: dict[tuple, int] = {}
    for i, arm in enumerate(resolved):
        if arm.name in RESERVED:
            errors.append(http_error(("arms", i, "name"), f"{arm.name!r} is reserved (the statistics use it); name "
                                     "the arm", arm.name))
        if arm.name in seen:
            errors.append(http_error(("arms", i, "name"), f"arm name {arm.name!r} is used by arms[{seen[arm.name]}] "
                                     "too; names must differ", arm.name))
        seen.setdefault(arm.name, i)
        key = (arm.method, arm.scale, arm.steps, arm.sampler)
        if key in settings_seen:
            errors.append(http_error(("arms", i), f"arms[{settings_seen[key]}] has the same method, scale, steps and "
                                     "sampler; an arm compared with itself tells nothing", raw[i].model_dump()))
        settings_seen.setdefault(key, i)
    design = body.design or DEFAULT_DESIGN
    reference = 0
    if body.reference_arm is not None:
        if body.reference_arm not in seen:
            errors.append(http_error(("reference_arm",), f"{body.reference_arm!r} is not one of the arms "
                                     f"({', '.join(a.name for a in resolved)})", body.reference_arm))
        else:
            reference = seen[body.reference_arm]
    k = len(resolved)
    n_pairs_all = k * (k - 1) // 2
    if body.pairs_per_item is not None and body.pairs_per_item > n_pairs_all:
        errors.append(http_error(("pairs_per_item",), f"{k} arms make {n_pairs_all} arm pairs; pairs_per_item "
                                 f"must be at most that", body.pairs_per_item))
    if errors:
        raise RequestInvalid(errors)

    # Jobs: the preset's comparison methods share a pair job where their steps and sampler agree.
    groups: list[tuple[str, ...]] = []
    used: set[int] = set()
    first, second = preset.pair_methods
    for i, a in enumerate(resolved):
        if i in used or a.method != first:
            continue
        for j, b in enumerate(resolved):
            if j not in used and j != i and b.method == second and (a.steps, a.sampler) == (b.steps, b.sampler):
                groups.append((a.name, b.name))
                used.update((i, j))
                break
    for i, a in enumerate(resolved):
        if i not in used:
            groups.append((a.name,))
    by_name = {a.name: a for a in resolved}
    per_job = max(1, settings.max_images_per_request // 2)
    specs: list[tuple[int, jobs.JobSpec, tuple[str, ...]]] = []
    for start in range(0, len(all_labels), per_job):
        chunk = all_labels[start:start + per_job]
        for group in groups:
            arms_in = [by_name[n] for n in group]
            guidance = PAIR if len(group) == 2 else arms_in[0].method
            scale = {a.method: a.scale for a in arms_in if a.method != NO_GUIDANCE} or None
            try:
                spec = job_spec(resolve_generation(
                    preset=preset.name, guidance=guidance, class_labels=chunk, scale=scale, steps=arms_in[0].steps,
                    sampler=arms_in[0].sampler, seed=seed + start, limits=limits))
            except CoreRequestInvalid as exc:
                raise http_errors(exc, {("class_labels",): ("labels",)}) from None
            specs.append((start, spec, group))
    pairs = item_pairs(len(all_labels), k, design, reference=reference, pairs_per_item=body.pairs_per_item)
    return ArmPlan(arms=resolved, design=design, reference=reference,
                   pairs_per_item=(body.pairs_per_item or max(1, k // 2)) if design == "balanced_incomplete" else None,
                   specs=specs, item_pairs=pairs)
