"""Checks a generation request against its preset and the server's limits.

Runs at the edge, before anything is stored or sent: labels in range, at
most N images, positive scales under the cap, a known step spec, weights
present. Uses only the torch-free ``model_core.presets`` and
``model_core.steps``, so the API never imports torch. All problems are
collected (not just the first), each with the location of the offending
field in FastAPI's 422 format.
"""
from __future__ import annotations

import secrets
from typing import Any

from model_core.presets import UnknownPresetError, get_preset
from model_core.steps import parse_steps
from worker.config import Settings
from worker.jobs import JobSpec

MAX_SEED = 2**63 - 1


class RequestInvalid(Exception):
    """Carries FastAPI-style error dicts: {"loc": (...), "msg": ..., "type": ..., "input": ...}."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def _error(loc: tuple, msg: str, value: Any) -> dict[str, Any]:
    return {"type": "value_error", "loc": ("body",) + loc, "msg": msg, "input": value}


def validate_generation(body: Any, settings: Settings) -> JobSpec:
    """``body`` is an ``app.schemas.GenerationRequest`` (or anything with its attributes)."""
    errors: list[dict[str, Any]] = []
    try:
        preset = get_preset(body.preset)
    except UnknownPresetError as exc:
        raise RequestInvalid([_error(("preset",), str(exc), body.preset)]) from None

    guidance = body.guidance
    if guidance != "pair" and guidance not in preset.methods:
        choices = ", ".join(list(preset.methods) + ["pair"])
        errors.append(_error(("guidance",), f"guidance {guidance!r} is not one of {choices}", guidance))
        methods: list[str] = []
    else:
        methods = ["robust", "vanilla"] if guidance == "pair" else [guidance]

    labels: list[int] = []
    for i, raw in enumerate(body.class_labels):
        try:
            labels.append(preset.resolve_label(raw))
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            if "invalid literal" in msg:  # a digit-like character int() does not read, e.g. '²'
                msg = f"class label {raw!r} is not an index or a class name of preset {preset.name!r}"
            if isinstance(raw, str) and "is not a class" in msg:
                msg += f" (classes: 0..{preset.num_classes - 1} or names such as {preset.class_names[0]!r})"
            errors.append(_error(("class_labels", i), msg, raw))
    per_label = max(len(methods), 1)
    n_images = len(body.class_labels) * per_label
    if n_images > settings.max_images_per_request:
        detail = f"{len(body.class_labels)} labels x 2 images for a pair" if per_label == 2 else \
            f"{len(body.class_labels)} labels"
        errors.append(_error(("class_labels",), f"{n_images} images requested ({detail}); this server makes at "
                             f"most {settings.max_images_per_request} per request", len(body.class_labels)))

    scales = _scales(body.scale, guidance, methods, preset, settings, errors)

    steps_given = body.steps is not None
    spec = body.steps if steps_given else preset.default_steps
    sampler = body.sampler or (None if steps_given else preset.default_sampler)
    num_timesteps = int(preset.diffusion.get("process", {}).get("diffusion_steps", 1000))
    step_spec = None
    try:
        step_spec = parse_steps(spec, sampler, num_timesteps=num_timesteps)
    except ValueError as exc:
        field = "sampler" if str(exc).startswith("sampler") else "steps"
        errors.append(_error((field,), str(exc), body.sampler if field == "sampler" else body.steps))
    if step_spec is not None and step_spec.num_steps > settings.max_steps:
        errors.append(_error(("steps",), f"steps {spec!r} means {step_spec.num_steps} sampling steps; this server "
                             f"allows at most {settings.max_steps}", body.steps))

    if body.seed is None:
        seed = secrets.randbelow(2**31)
    else:
        seed = int(body.seed)
        if seed < 0 or seed + max(len(body.class_labels), 1) - 1 > MAX_SEED:
            errors.append(_error(("seed",), f"seed must be in [0, 2**63 - {len(body.class_labels)}] so that image "
                                 "i's seed (seed + i) fits in 63 bits", body.seed))

    if methods and not errors:
        missing = preset.missing_checkpoints(methods)
        if missing:
            errors.append(_error(("preset",), f"preset {preset.name!r} cannot run on this server: "
                                 + "; ".join(missing), preset.name))
    if errors:
        raise RequestInvalid(errors)
    return JobSpec(preset=preset.name, guidance=guidance, labels=tuple(labels),
                   seeds=tuple(seed + i for i in range(len(labels))), scales=scales, steps=step_spec.spec,
                   sampler=step_spec.sampler, num_steps=step_spec.num_steps)


def _scales(scale: Any, guidance: str, methods: list[str], preset, settings: Settings,
            errors: list[dict[str, Any]]) -> dict[str, float]:
    guided = [m for m in methods if m != "none"]
    cap = min(preset.max_scale, settings.max_scale)
    given: dict[str, float] = {}
    if scale is None:
        pass
    elif guidance == "none":
        errors.append(_error(("scale",), "guidance 'none' takes no scale; leave scale out", scale))
    elif isinstance(scale, dict):
        for method, value in scale.items():
            if method not in guided:
                errors.append(_error(("scale", method), f"scale names {method!r}, which this request does not "
                                     f"sample (it samples {', '.join(guided) or 'nothing guided'})", value))
                continue
            if _check_scale(value, cap, ("scale", method), errors):
                given[method] = float(value)
    else:
        if _check_scale(scale, cap, ("scale",), errors):
            given = {m: float(scale) for m in guided}
    return {m: preset.scale_for(m, given.get(m)) for m in guided}


def _check_scale(value: Any, cap: float, loc: tuple, errors: list[dict[str, Any]]) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.append(_error(loc, "scale must be a number", value))
        return False
    if not value > 0:
        errors.append(_error(loc, "scale must be positive (for no guidance use guidance 'none')", value))
        return False
    if value > cap:
        errors.append(_error(loc, f"scale {value} is above this server's cap of {cap}", value))
        return False
    return True
