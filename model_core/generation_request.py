"""One resolver for generation requests: the same rules and defaults for the API, the survey and ``rguide sample``.

Torch-free, so the API runs it at the edge. It takes the request's fields as
plain values (labels as indices or class names, a scale as one number or per
method, a steps spec, a sampler, a first seed or explicit seeds) and either
returns a fully resolved :class:`ResolvedRequest` or raises
:class:`RequestInvalid` with every problem found, each keyed by the field it
concerns (``("class_labels", 0)``, ``("scale", "robust")``, ...). Each caller
maps those keys to its own names: the API to 422 locations under ``body``,
the survey to its study fields, the CLI to its flags.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Sequence

from model_core.presets import NO_GUIDANCE, PAIR, Preset, UnknownPresetError, get_preset

MAX_SEED = 2**63 - 1
RANDOM_SEED_BELOW = 2**31  # a seed chosen for the caller stays short enough to read and type


@dataclass(frozen=True)
class FieldError:
    field: tuple[str | int, ...]
    message: str
    value: Any = None


class RequestInvalid(ValueError):
    """Every problem of one request, each with the field it concerns."""

    def __init__(self, errors: list[FieldError]):
        super().__init__("; ".join(f"{'.'.join(map(str, e.field))}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Limits:
    """What this server or command allows; None is no limit beyond the preset's."""
    max_images: int | None = None
    max_scale: float | None = None
    max_steps: int | None = None


@dataclass(frozen=True)
class ResolvedRequest:
    preset: str
    guidance: str
    methods: tuple[str, ...]
    labels: tuple[int, ...]
    seeds: tuple[int, ...]
    scales: dict[str, float] = field(default_factory=dict)  # per guided method; empty for 'none'
    steps: str = ""
    sampler: str = ""
    num_steps: int = 0

    @property
    def num_images(self) -> int:
        return len(self.labels) * len(self.methods)


def resolve_generation(*, preset: str | None, class_labels: Sequence[Any], guidance: str,
                       scale: Any = None, steps: Any = None, sampler: str | None = None,
                       seed: int | None = None, seeds: Sequence[int] | None = None,
                       limits: Limits = Limits(), check_weights: bool = True) -> ResolvedRequest:
    """Resolve a request against its preset, or raise :class:`RequestInvalid` naming every bad field.

    Image i uses ``seed + i`` (or ``seeds[i]``); without either a random seed
    is chosen. ``scale`` is one positive number for every guided method or a
    dict per method; missing scales take the preset's defaults (for ``pair``,
    the scales of its comparison's arms).
    """
    try:
        p = get_preset(preset)
    except UnknownPresetError as exc:
        raise RequestInvalid([FieldError(("preset",), str(exc), preset)]) from None
    errors: list[FieldError] = []

    try:
        methods = p.methods_for(guidance)
    except ValueError as exc:
        errors.append(FieldError(("guidance",), str(exc), guidance))
        methods = ()

    labels = _labels(p, class_labels, errors)
    per_label = max(len(methods), 1)
    n_images = len(class_labels) * per_label
    if limits.max_images is not None and n_images > limits.max_images:
        detail = f"{len(class_labels)} labels x {per_label} images for a pair" if per_label > 1 else \
            f"{len(class_labels)} labels"
        errors.append(FieldError(("class_labels",), f"{n_images} images requested ({detail}); this server makes "
                                 f"at most {limits.max_images} per request", len(class_labels)))

    scales = _scales(p, scale, guidance, methods, limits, errors)
    step_spec = _steps(p, steps, sampler, limits, errors)
    seed_list = _seeds(seed, seeds, len(class_labels), errors)

    if methods and not errors and check_weights:
        missing = p.missing_checkpoints(list(methods))
        if missing:
            errors.append(FieldError(("preset",), f"preset {p.name!r} cannot run here: " + "; ".join(missing),
                                     p.name))
    if errors:
        raise RequestInvalid(errors)
    return ResolvedRequest(preset=p.name, guidance=guidance, methods=tuple(methods), labels=tuple(labels),
                           seeds=tuple(seed_list), scales=scales, steps=step_spec.spec, sampler=step_spec.sampler,
                           num_steps=step_spec.num_steps)


def _labels(p: Preset, raw_labels: Sequence[Any], errors: list[FieldError]) -> list[int]:
    if not raw_labels:
        errors.append(FieldError(("class_labels",), "no labels given: name at least one class", list(raw_labels)))
    labels: list[int] = []
    for i, raw in enumerate(raw_labels):
        try:
            labels.append(p.resolve_label(raw))
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            if "invalid literal" in msg:  # a digit-like character int() does not read, e.g. '²'
                msg = f"class label {raw!r} is not an index or a class name of preset {p.name!r}"
            if isinstance(raw, str) and "is not a class" in msg:
                msg += f" (classes: 0..{p.num_classes - 1} or names such as {p.class_names[0]!r})"
            errors.append(FieldError(("class_labels", i), msg, raw))
    return labels


def _scales(p: Preset, scale: Any, guidance: str, methods: Sequence[str], limits: Limits,
            errors: list[FieldError]) -> dict[str, float]:
    guided = [m for m in methods if m != NO_GUIDANCE]
    cap = p.max_scale if limits.max_scale is None else min(p.max_scale, limits.max_scale)
    given: dict[str, float] = {}
    if scale is None:
        pass
    elif guidance == NO_GUIDANCE:
        errors.append(FieldError(("scale",), "guidance 'none' takes no scale; leave scale out", scale))
    elif isinstance(scale, dict):
        for method, value in scale.items():
            if method not in guided:
                errors.append(FieldError(("scale", method), f"scale names method {method!r}, which this request does "
                                         f"not sample (it samples {', '.join(guided) or 'nothing guided'})", value))
                continue
            if _check_scale(value, cap, ("scale", method), errors):
                given[method] = float(value)
    elif _check_scale(scale, cap, ("scale",), errors):
        given = {m: float(scale) for m in guided}
    defaults = p.comparison_scales() if guidance == PAIR else {}
    return {m: p.scale_for(m, given.get(m, defaults.get(m))) for m in guided}


def _check_scale(value: Any, cap: float, key: tuple, errors: list[FieldError]) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.append(FieldError(key, "scale must be a number", value))
        return False
    if not value > 0:
        errors.append(FieldError(key, "scale must be positive (for no guidance use guidance 'none')", value))
        return False
    if value > cap:
        errors.append(FieldError(key, f"scale {value} is above the cap of {cap}", value))
        return False
    return True


def _steps(p: Preset, steps: Any, sampler: str | None, limits: Limits, errors: list[FieldError]):
    try:
        spec = p.resolve_steps(steps, sampler)
    except ValueError as exc:
        key = "sampler" if str(exc).startswith("sampler") else "steps"
        errors.append(FieldError((key,), str(exc), sampler if key == "sampler" else steps))
        return None
    if limits.max_steps is not None and spec.num_steps > limits.max_steps:
        errors.append(FieldError(("steps",), f"steps {spec.spec!r} means {spec.num_steps} sampling steps; this "
                                 f"server allows at most {limits.max_steps}", steps))
    return spec


def _seeds(seed: int | None, seeds: Sequence[int] | None, n: int, errors: list[FieldError]) -> list[int]:
    if seeds is not None:
        if seed is not None:
            errors.append(FieldError(("seeds",), "give a first seed or explicit seeds, not both", list(seeds)))
        if len(seeds) != n:
            errors.append(FieldError(("seeds",), f"{len(seeds)} seeds for {n} labels: give one per label",
                                     list(seeds)))
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
        if bad:
            errors.append(FieldError(("seeds",), f"seeds must be integers in [0, 2**63); got {bad[0]!r}", bad[0]))
        return list(seeds)
    first = secrets.randbelow(RANDOM_SEED_BELOW) if seed is None else seed
    if isinstance(first, bool) or not isinstance(first, int) or first < 0 or first + max(n, 1) - 1 > MAX_SEED:
        errors.append(FieldError(("seed",), f"seed must be in [0, 2**63 - {n}] so that image i's seed (seed + i) "
                                 "fits in 63 bits", seed))
        return []
    return [first + i for i in range(n)]
