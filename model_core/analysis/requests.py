"""The one resolver of analysis requests: the same rules and defaults for the API, the CLI and reproduction.

Torch-free, so the API runs it at the edge. ``resolve_analysis(kind, fields)``
takes the request's fields as plain values and returns a
:class:`ResolvedAnalysis` whose ``settings`` hold *everything* the run
depends on, defaults filled in (arms as method and scale, the attack radius as
a number, the judge network by path and hash), or raises
``model_core.generation_request.RequestInvalid`` listing every problem keyed
by its field (``("classifiers", 1)``, ``("images", 0, "png")``, ...). The
sidecar of a run stores these settings, so a preset whose defaults change
later still reproduces the old run.

Fields by kind (all optional unless marked):

* gradients: ``classifiers``, ``images`` (uploads: ``{"png": bytes, "label": int|str}``, label required)
  or ``heldout`` (how many held-out images; default all), ``seed``, ``show``, ``timesteps``, ``buckets``,
  ``threshold``
* maximize: ``classifiers``, ``images`` (label optional, ``target`` optional) or ``heldout``, ``targets``,
  ``seed``, ``show``, ``eps``, ``attack_steps``, ``step_size``, ``judge``
* trajectory: ``labels`` (required), ``seed`` or ``seeds``, ``arms``, ``frames``, ``steps``, ``sampler``
* compare: ``labels`` (required), ``seed`` or ``seeds``, ``arms``, ``steps``, ``sampler``
* sweep: ``methods``, ``scales``, ``per_class``, ``steps``, ``sampler``, ``seed``, ``k``
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from model_core.analysis import kinds
from model_core.analysis.inputs import ImageRefused, InputImage, from_png
from model_core.files import sha256_file
# The generation resolver's rules for labels, seeds and steps: one set of rules for both.
from model_core.generation_request import FieldError, RequestInvalid, _labels, _seeds, _steps
from model_core.generation_request import Limits as GenerationLimits
from model_core.presets import NO_GUIDANCE, Preset, UnknownPresetError, get_preset

# The paper's class maximisation (Sec. 5.1): L2 radius 100 on 128x128x3 images, 7 steps.
PAPER_MAX_EPS = 100.0
PAPER_MAX_DIM = 128 * 128 * 3
PAPER_MAX_STEPS = 7
# Appendix E: "the attack step size is set to 2.5 times the upper bound ... divided by the number of steps".
STEP_RULE = 2.5

DEFAULT_TIMESTEP_FRACTIONS = (0.0, 0.1, 0.2, 0.4, 0.6)
DEFAULT_SHOW = {"gradients": 4, "maximize": 6}
DEFAULT_FRAMES = 8
DEFAULT_BUCKETS = 4
DEFAULT_THRESHOLD = 0.0  # [-1, 1] pixels: brighter than mid-grey is "object"
DEFAULT_SWEEP_SCALES = (0.25, 0.5, 1.0, 2.0)
MAX_FRAMES = 32
MAX_TIMESTEPS = 16
MAX_BUCKETS = 20
MAX_SHOW = 32
JUDGE_FEATURES, JUDGE_NONE = "features", "none"

FIELDS = {
    "gradients": {"classifiers", "images", "heldout", "seed", "show", "timesteps", "buckets", "threshold"},
    "maximize": {"classifiers", "images", "heldout", "targets", "seed", "show", "eps", "attack_steps", "step_size",
                 "judge"},
    "trajectory": {"labels", "seed", "seeds", "arms", "frames", "steps", "sampler"},
    "compare": {"labels", "seed", "seeds", "arms", "steps", "sampler"},
    "sweep": {"methods", "scales", "per_class", "steps", "sampler", "seed", "k"},
}


@dataclass(frozen=True)
class AnalysisLimits:
    """What this server or command allows; None is no limit."""
    max_uploads: int | None = None   # uploaded images per request
    max_images: int | None = None    # held-out images analysed, or images generated
    max_steps: int | None = None
    max_scale: float | None = None


@dataclass(frozen=True)
class ResolvedAnalysis:
    kind: str
    preset: str
    settings: dict[str, Any]                          # JSON-serialisable; the run depends on nothing else
    uploads: tuple[InputImage, ...] = field(default_factory=tuple)
    num_images: int = 0                               # images analysed or generated: the job's size

    @property
    def command(self) -> str:
        return kinds.get(self.kind).command


def paper_radius(dim: int) -> float:
    """The paper's radius 100 for d = 128*128*3, scaled by sqrt(d / 49152) (the same per-pixel size)."""
    return PAPER_MAX_EPS * math.sqrt(dim / PAPER_MAX_DIM)


def default_arm_names(p: Preset) -> list[str]:
    """Unguided first, then the comparison's baseline (its second arm), then its first, then any other arm."""
    order = [a.name for a in p.arms.values() if a.method == NO_GUIDANCE]
    order += [n for n in reversed(p.comparison) if n not in order]
    order += [n for n in p.arms if n not in order]
    return order


def resolve_analysis(kind: str, fields: Mapping[str, Any], *, preset: str | None = None,
                     limits: AnalysisLimits = AnalysisLimits(), allow_paths: bool = False,
                     check_weights: bool = True) -> ResolvedAnalysis:
    """Resolve one request, or raise ``RequestInvalid`` naming every bad field.

    ``allow_paths``: a judge network may be given as a file path (the CLI); the
    API leaves it False, so a request cannot make the server read its files.
    """
    try:
        kinds.get(kind)
    except ValueError as exc:
        raise RequestInvalid([FieldError(("kind",), str(exc), kind)]) from None
    try:
        p = get_preset(preset)
    except UnknownPresetError as exc:
        raise RequestInvalid([FieldError(("preset",), str(exc), preset)]) from None
    errors: list[FieldError] = []
    given = {k: v for k, v in fields.items() if v is not None}
    for name in sorted(set(given) - FIELDS[kind]):
        errors.append(FieldError((name,), f"{name} does not apply to a {kind} analysis (it takes "
                                 f"{', '.join(sorted(FIELDS[kind]))})", given[name]))
    resolver = {"gradients": _gradients, "maximize": _maximize, "trajectory": _trajectory,
                "compare": _compare, "sweep": _sweep}[kind]
    settings, uploads, n = resolver(p, given, limits, errors, allow_paths)
    methods = _methods_used(kind, settings)
    if not errors and check_weights:
        missing = p.missing_checkpoints(methods)
        if missing:
            errors.append(FieldError(("preset",), f"preset {p.name!r} cannot run here: " + "; ".join(missing),
                                     p.name))
    if errors:
        raise RequestInvalid(errors)
    return ResolvedAnalysis(kind, p.name, {"preset": p.name, **settings}, tuple(uploads), n)


def _methods_used(kind: str, settings: dict) -> list[str]:
    if kind in ("gradients", "maximize"):
        return list(settings.get("classifiers", []))
    if kind in ("trajectory", "compare"):
        return sorted({a["method"] for a in settings.get("arms", [])})
    return list(settings.get("methods", []))


# -- pieces ---------------------------------------------------------------------------------

def _int(value: Any, key: tuple, errors: list[FieldError], lo: int, hi: int | None = None,
         what: str | None = None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(key, f"{what or key[0]} must be a whole number", value))
        return None
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        errors.append(FieldError(key, f"{what or key[0]} must be in {rng}, got {value}", value))
        return None
    return value


def _number(value: Any, key: tuple, errors: list[FieldError], *, positive: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        errors.append(FieldError(key, f"{key[0]} must be a finite number", value))
        return None
    if positive and not value > 0:
        errors.append(FieldError(key, f"{key[0]} must be positive, got {value}", value))
        return None
    return float(value)


def _list(value: Any, key: str, errors: list[FieldError]) -> list | None:
    if not isinstance(value, (list, tuple)):
        errors.append(FieldError((key,), f"{key} must be a list", value))
        return None
    if not value:
        errors.append(FieldError((key,), f"{key} is empty: give at least one, or leave it out for the default",
                                 value))
        return None
    return list(value)


def _classifiers(p: Preset, given: dict, errors: list[FieldError]) -> list[str]:
    # Gradients and maximisation differentiate a classifier network: the preset's networks, not every method.
    if "classifiers" not in given:
        return list(p.networks)
    names = _list(given["classifiers"], "classifiers", errors)
    if names is None:
        return []
    out = []
    for i, name in enumerate(names):
        if name not in p.networks:
            errors.append(FieldError(("classifiers", i), f"classifier {name!r} is not one of preset {p.name!r}'s "
                                     f"networks ({', '.join(p.networks)})", name))
        elif name in out:
            errors.append(FieldError(("classifiers", i), f"classifier {name!r} is listed twice", name))
        else:
            out.append(name)
    return out


def _label(p: Preset, raw: Any, key: tuple, errors: list[FieldError]) -> int | None:
    try:
        return p.resolve_label(raw)
    except (ValueError, TypeError) as exc:
        errors.append(FieldError(key, str(exc), raw))
        return None


def _inputs(kind: str, p: Preset, given: dict, limits: AnalysisLimits, errors: list[FieldError],
            label_required: bool) -> tuple[dict, list[InputImage], int]:
    """Uploaded images, or held-out picks: the settings' ``inputs`` entry, the uploads, and the image count."""
    seed = given.get("seed", 0)
    if "images" in given and "heldout" in given:
        errors.append(FieldError(("heldout",), "give uploaded images or a held-out count, not both",
                                 given["heldout"]))
    if "images" in given:
        raw = _list(given["images"], "images", errors)
        if raw is None:
            return {}, [], 0
        if limits.max_uploads is not None and len(raw) > limits.max_uploads:
            errors.append(FieldError(("images",), f"{len(raw)} images uploaded; this server takes at most "
                                     f"{limits.max_uploads} per request", len(raw)))
            return {}, [], 0
        uploads: list[InputImage] = []
        extra_ok = {"png", "label"} | ({"target"} if kind == "maximize" else set())
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or "png" not in item:
                errors.append(FieldError(("images", i), "each image is an object with 'png' (the file's bytes) "
                                         "and 'label'", None))
                continue
            for k in sorted(set(item) - extra_ok):
                errors.append(FieldError(("images", i, k), f"unknown field {k!r} (an image takes "
                                         f"{', '.join(sorted(extra_ok))})", None))
            label = None
            if item.get("label") is not None:
                label = _label(p, item["label"], ("images", i, "label"), errors)
            elif label_required:
                errors.append(FieldError(("images", i, "label"), "label is required: the class whose log "
                                         "probability is differentiated", None))
            data = item["png"]
            if not isinstance(data, (bytes, bytearray)):
                errors.append(FieldError(("images", i, "png"), "png must be the PNG file's bytes", None))
                continue
            try:
                uploads.append(from_png(bytes(data), label, image_size=p.image_size, channels=p.in_channels))
            except ImageRefused as exc:
                errors.append(FieldError(("images", i, "png"), str(exc), None))
        return {"uploads": [u.ref() for u in uploads]}, uploads, len(uploads)
    count = given.get("heldout")
    if count is not None:
        count = _int(count, ("heldout",), errors, 1, None, "heldout")
    if count is not None and limits.max_images is not None and count > limits.max_images:
        errors.append(FieldError(("heldout",), f"{count} held-out images asked for; this server analyses at most "
                                 f"{limits.max_images} per request", count))
    data = p.extra.get("training", {}).get("data")
    if data is None:
        errors.append(FieldError(("images",), f"preset {p.name!r} has no held-out data recorded: upload images",
                                 None))
        return {}, [], 0
    # Without a count, every held-out image (how many is known when the data are loaded), up to this
    # server's limit.
    spec = {"data": data, "count": count, "seed": seed}
    if count is None and limits.max_images is not None:
        spec["limit"] = limits.max_images
    return {"heldout": spec}, [], count or 0


def _show(kind: str, given: dict, n: int, errors: list[FieldError]) -> int:
    show = given.get("show", DEFAULT_SHOW[kind])
    show = _int(show, ("show",), errors, 1, MAX_SHOW)
    return min(show or 1, n) if n else (show or 1)


def _seed(given: dict, errors: list[FieldError]) -> int:
    return _int(given.get("seed", 0), ("seed",), errors, 0, 2**63 - 1) or 0


# -- kinds ----------------------------------------------------------------------------------

def _gradients(p, given, limits, errors, allow_paths):
    classifiers = _classifiers(p, given, errors)
    inputs, uploads, n = _inputs("gradients", p, given, limits, errors, label_required=True)
    T = p.num_timesteps
    if "timesteps" in given:
        raw = _list(given["timesteps"], "timesteps", errors) or []
        if len(raw) > MAX_TIMESTEPS:
            errors.append(FieldError(("timesteps",), f"at most {MAX_TIMESTEPS} timesteps", len(raw)))
        timesteps = [t for i, v in enumerate(raw)
                     if (t := _int(v, ("timesteps", i), errors, 0, T - 1, "timestep")) is not None]
    else:
        timesteps = sorted({min(T - 1, round(f * T)) for f in DEFAULT_TIMESTEP_FRACTIONS})
    buckets = _int(given.get("buckets", DEFAULT_BUCKETS), ("buckets",), errors, 1, MAX_BUCKETS) or DEFAULT_BUCKETS
    threshold = _number(given.get("threshold", DEFAULT_THRESHOLD), ("threshold",), errors)
    if threshold is not None and not -1.0 <= threshold < 1.0:
        errors.append(FieldError(("threshold",), f"threshold is a pixel value in [-1, 1), got {threshold}",
                                 threshold))
    settings = {"classifiers": classifiers, "inputs": inputs, "show": _show("gradients", given, n, errors),
                "timesteps": timesteps, "buckets": buckets, "threshold": threshold, "seed": _seed(given, errors),
                "noise": "image i of the inputs: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with eps (and, per "
                         "bucket, t) from SeedSequence([seed, i, stream]); the same x_t for every classifier"}
    return settings, uploads, n


def _maximize(p, given, limits, errors, allow_paths):
    classifiers = _classifiers(p, given, errors)
    inputs, uploads, n = _inputs("maximize", p, given, limits, errors, label_required=False)
    dim = p.in_channels * p.image_size * p.image_size
    eps = given.get("eps")
    rule = None
    if eps is None:
        eps = paper_radius(dim)
        rule = (f"the paper's 100 for 128x128x3 scaled by sqrt({dim} / {PAPER_MAX_DIM}): the same radius per "
                "pixel")
    else:
        eps = _number(eps, ("eps",), errors, positive=True)
    steps = _int(given.get("attack_steps", PAPER_MAX_STEPS), ("attack_steps",), errors, 1, 1000) or PAPER_MAX_STEPS
    step_size = given.get("step_size")
    step_rule = None
    if step_size is None and eps is not None:
        step_size = STEP_RULE * eps / steps
        step_rule = "2.5 * eps / attack_steps (the paper's Appendix E)"
    elif step_size is not None:
        step_size = _number(step_size, ("step_size",), errors, positive=True)
    targets_rule = None
    targets: list[int] | None = None
    if "targets" in given:
        raw = _list(given["targets"], "targets", errors) or []
        targets = [t for i, v in enumerate(raw) if (t := _label(p, v, ("targets", i), errors)) is not None]
        if uploads and len(raw) != len(uploads):
            errors.append(FieldError(("targets",), f"{len(raw)} targets for {len(uploads)} images: give one per "
                                     "image", len(raw)))
        if inputs.get("heldout") and inputs["heldout"]["count"] is not None and len(raw) != inputs["heldout"]["count"]:
            errors.append(FieldError(("targets",), f"{len(raw)} targets for {inputs['heldout']['count']} held-out "
                                     "images: give one per image, or none for random targets", len(raw)))
    if uploads and targets is None:
        raw_items = given.get("images") or []
        per_image = [item.get("target") if isinstance(item, Mapping) else None for item in raw_items]
        if any(t is not None for t in per_image):
            targets = []
            for i, t in enumerate(per_image):
                if t is None:
                    errors.append(FieldError(("images", i, "target"), "target is missing: give every image a "
                                             "target, or none for random targets", None))
                elif (r := _label(p, t, ("images", i, "target"), errors)) is not None:
                    targets.append(r)
    if targets is None:
        targets_rule = ("for image i with label y: y + 1 + r_i mod C, r_i uniform in 0..C-2 from "
                        "SeedSequence([seed, i, 2]); an image without a label takes r_i mod C")
    settings = {"classifiers": classifiers, "inputs": inputs, "show": _show("maximize", given, n, errors),
                "t": 0, "norm": "l2", "eps": eps, "eps_rule": rule, "attack_steps": steps, "step_size": step_size,
                "step_rule": step_rule, "targets": targets, "targets_rule": targets_rule,
                "clip": [-1.0, 1.0], "seed": _seed(given, errors),
                "judge": _judge(p, given.get("judge", JUDGE_FEATURES), errors, allow_paths)}
    return settings, uploads, n


def _judge(p: Preset, spec: Any, errors: list[FieldError], allow_paths: bool) -> dict:
    """Which network reads the maximised images: not the classifier being maximised."""
    if spec == JUDGE_NONE:
        return {"kind": JUDGE_NONE}
    if spec == JUDGE_FEATURES:
        judge = p.judge_network()
        if judge is None:
            errors.append(FieldError(("judge",), f"preset {p.name!r} has no bundled judge network (its evaluation "
                                     "features are not a classifier here): give judge as a classifier file "
                                     "(a digits feature network or a TorchScript module), or 'none'", spec))
            return {}
        return {"kind": "digits", "path": judge, "role": "the preset's evaluation feature network"}
    if not isinstance(spec, str):
        errors.append(FieldError(("judge",), "judge must be 'features', 'none' or a file path", spec))
        return {}
    if not allow_paths:
        errors.append(FieldError(("judge",), "judge must be 'features' or 'none' here (a server reads no file a "
                                 "request names)", spec))
        return {}
    path = Path(spec).expanduser()
    if not path.is_file():
        errors.append(FieldError(("judge",), f"judge {spec!r}: no such file", spec))
        return {}
    return {"kind": "file", "path": str(path.resolve()), "sha256": sha256_file(path)}


def _arms(p: Preset, given: dict, errors: list[FieldError], limits: AnalysisLimits) -> list[dict]:
    names = _list(given["arms"], "arms", errors) if "arms" in given else default_arm_names(p)
    if names is None:
        return []
    cap = p.max_scale if limits.max_scale is None else min(p.max_scale, limits.max_scale)
    out: list[dict] = []
    for i, spec in enumerate(names):
        key = ("arms", i)
        if not isinstance(spec, str):
            errors.append(FieldError(key, "an arm is a name of the preset's arms or 'method=scale'", spec))
            continue
        if "=" in spec:
            method, _, raw = (s.strip() for s in spec.partition("="))
            if method not in p.classifiers:
                errors.append(FieldError(key, f"arm {spec!r}: {method!r} is not a classifier of preset {p.name!r} "
                                         f"({', '.join(p.classifiers)})", spec))
                continue
            try:
                scale = float(raw)
            except ValueError:
                errors.append(FieldError(key, f"arm {spec!r}: {raw!r} is not a number", spec))
                continue
            if not (0 < scale <= cap):
                errors.append(FieldError(key, f"arm {spec!r}: the scale must be in (0, {cap}]", spec))
                continue
            arm = {"name": f"{method}={scale:g}", "method": method, "scale": scale}
        elif spec in p.arms:
            a = p.arms[spec]
            arm = {"name": a.name, "method": a.method, "scale": a.scale}
        else:
            errors.append(FieldError(key, f"arm {spec!r} is not one of preset {p.name!r}'s arms "
                                     f"({', '.join(p.arms)}) nor 'method=scale'", spec))
            continue
        if any(o["name"] == arm["name"] for o in out):
            errors.append(FieldError(key, f"arm {arm['name']!r} is listed twice", spec))
            continue
        out.append(arm)
    return out


def _samples(p, given, limits, errors):
    raw = given.get("labels")
    if raw is None:
        errors.append(FieldError(("labels",), "labels are required: the classes to sample", None))
        raw = []
    elif not isinstance(raw, (list, tuple)):
        errors.append(FieldError(("labels",), "labels must be a list", raw))
        raw = []
    glimits = GenerationLimits(max_steps=limits.max_steps)
    sub: list[FieldError] = []
    labels = _labels(p, list(raw), sub) if raw or "labels" in given else []
    for e in sub:
        errors.append(FieldError(("labels",) + e.field[1:], e.message, e.value))
    arms = _arms(p, given, errors, limits)
    if "seeds" in given:
        seeds = _seeds(given.get("seed"), given["seeds"], len(raw), errors)
    else:
        seeds = _seeds(given.get("seed", 0), None, len(raw), errors)
    spec = _steps(p, given.get("steps"), given.get("sampler"), glimits, errors)
    n = len(raw) * max(len(arms), 1)
    if limits.max_images is not None and n > limits.max_images:
        errors.append(FieldError(("labels",), f"{n} images asked for ({len(raw)} labels x {len(arms)} arms); this "
                                 f"server makes at most {limits.max_images} per request", len(raw)))
    settings = {"labels": labels, "seeds": seeds, "arms": arms,
                "steps": spec.spec if spec else None, "sampler": spec.sampler if spec else None,
                "num_steps": spec.num_steps if spec else None}
    return settings, n


def _trajectory(p, given, limits, errors, allow_paths):
    settings, n = _samples(p, given, limits, errors)
    frames = _int(given.get("frames", DEFAULT_FRAMES), ("frames",), errors, 1, MAX_FRAMES) or DEFAULT_FRAMES
    if settings["num_steps"] is not None and frames > settings["num_steps"]:
        errors.append(FieldError(("frames",), f"{frames} frames from {settings['num_steps']} sampling steps: at most "
                                 "one frame per step", frames))
    settings["frames"] = frames
    return settings, [], n


def _compare(p, given, limits, errors, allow_paths):
    settings, n = _samples(p, given, limits, errors)
    return settings, [], n


def _sweep(p, given, limits, errors, allow_paths):
    # Default: the classifier networks; guidance by the diffusion model itself costs classes x (draws + 1) UNet
    # forwards a step, so a sweep includes it only when asked by name.
    methods = given.get("methods", [NO_GUIDANCE, *p.networks])
    if not isinstance(methods, (list, tuple)) or not methods:
        errors.append(FieldError(("methods",), "methods must be a non-empty list", methods))
        methods = []
    for i, m in enumerate(methods):
        if m not in p.methods:
            errors.append(FieldError(("methods", i), f"method {m!r} is {p.not_offered(m)} "
                                     f"({', '.join(p.methods)})", m))
    scales_raw = given.get("scales", list(DEFAULT_SWEEP_SCALES))
    scales = []
    cap = p.max_scale if limits.max_scale is None else min(p.max_scale, limits.max_scale)
    if not isinstance(scales_raw, (list, tuple)) or not scales_raw:
        errors.append(FieldError(("scales",), "scales must be a non-empty list of positive numbers", scales_raw))
    else:
        for i, s in enumerate(scales_raw):
            v = _number(s, ("scales", i), errors, positive=True)
            if v is not None and v > cap:
                errors.append(FieldError(("scales", i), f"scale {v} is above the cap of {cap}", s))
            elif v is not None:
                scales.append(v)
    per_class = _int(given.get("per_class", 50), ("per_class",), errors, 1, None) or 1
    k = _int(given.get("k", 3), ("k",), errors, 1, 100) or 3
    spec = _steps(p, given.get("steps"), given.get("sampler"), GenerationLimits(max_steps=limits.max_steps), errors)
    rows = sum(1 if m == NO_GUIDANCE else len(scales) for m in methods if m in p.methods)
    n = rows * per_class * p.num_classes
    if limits.max_images is not None and n > limits.max_images:
        errors.append(FieldError(("per_class",), f"{n} images to generate ({rows} rows x {per_class} per class x "
                                 f"{p.num_classes} classes); this server makes at most {limits.max_images} per "
                                 "request", per_class))
    ev = p.extra.get("evaluation", {})
    if not ev.get("features") or not ev.get("real_data"):
        errors.append(FieldError(("preset",), f"preset {p.name!r} names no evaluation network and real images "
                                 "(extra.evaluation); use rguide evaluate with --features and --real", p.name))
    settings = {"methods": [m for m in methods if m in p.methods], "scales": scales, "per_class": per_class,
                "steps": spec.spec if spec else None, "sampler": spec.sampler if spec else None,
                "seed": _seed(given, errors), "k": k}
    return settings, [], n
