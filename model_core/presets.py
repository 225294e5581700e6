"""Presets: named bundles of a diffusion model, its guiding classifiers and defaults.

Presets are data (``model_core/data/presets/<name>.json``), read without torch
so the API can validate requests against them at the edge. A preset names

* ``diffusion``: the UNet's architecture (``model``, ADM flags), the process
  (``process``: schedule, learned sigma) and where its weights live;
* ``classifiers``: one entry per guidance method (at least ``vanilla`` and
  ``robust``), each a ``kind`` of guidance provider (default
  ``adm_classifier``; the kinds are listed in ``model_core.sampling.providers``),
  its architecture (``model``) and weights (``checkpoint``), or, for a kind
  that guides with the preset's own diffusion model (``diffusion_bayes``),
  its settings (``draws``). An entry whose kind needs a class-conditional
  diffusion model is kept out of a preset whose model is unconditional, with
  the reason, which a request for it is told (``unavailable``): so
  ``demo-uncond`` inherits ``demo``'s classifiers but not its ``diffusion``
  method;
* image size, channels, class names, default guidance scales, default
  respacing and sampler;
* ``arms``: named (method, scale) settings a study or a comparison can use,
  and ``comparison``: the two arms that ``guidance: "pair"`` samples as a
  seed-matched pair (the paper's robust 1.0 against vanilla 0.5 for
  ``imagenet128``). Without ``arms``, each classifier is an arm at its
  default scale; without ``comparison``, it is robust against vanilla.

Where weights live (``checkpoint``): the environment variable named by
``env`` wins when set; otherwise ``path``, where ``bundled:REL`` means a file
shipped inside ``model_core/weights`` and any other relative path is taken
under ``$RGUIDE_CHECKPOINT_DIR`` (default ``./checkpoints``). A checkpoint
with ``path: null`` and an ``init_seed`` is a deterministic random
initialisation (the ``tiny`` test preset).

A preset may name another with ``"extends": NAME`` and give only what
differs (``demo-uncond`` is ``demo`` with an unconditional UNet): objects
merge key by key, other values (lists included) replace the base's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from model_core import settings
from model_core.sampling import providers
from model_core.steps import StepSpec, resolve_steps

PRESET_DIR = Path(__file__).resolve().parent / "data" / "presets"
DATA_DIR = Path(__file__).resolve().parent / "data"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


PAIR = "pair"  # the guidance value that means "the preset's comparison"
NO_GUIDANCE = "none"
DEFAULT_COMPARISON = ("robust", "vanilla")


class UnknownPresetError(ValueError):
    pass


@dataclass(frozen=True)
class Arm:
    """One setting of guidance: a method of the preset and its scale (0 for ``none``)."""
    name: str
    method: str
    scale: float

    def to_public_dict(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "scale": self.scale}


@dataclass(frozen=True)
class WeightsSpec:
    role: str
    path: str | None
    env: str | None
    init_seed: int | None

    def resolve(self) -> Path | None:
        """The file to load, or None for a seeded random initialisation."""
        if self.env and settings.env(self.env):
            return settings.env_path(self.env)
        if self.path is None:
            return None
        if self.path.startswith("bundled:"):
            return WEIGHTS_DIR / self.path[len("bundled:"):]
        p = Path(self.path).expanduser()
        if p.is_absolute():
            return p
        return settings.checkpoint_dir() / p

    def problem(self) -> str | None:
        path = self.resolve()
        if path is None or path.is_file():
            return None
        hint = f" (set {self.env} to its path)" if self.env else ""
        return f"{self.role} weights not found at {path}{hint}"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    image_size: int
    in_channels: int
    num_classes: int
    class_names: tuple[str, ...]
    diffusion: dict[str, Any]
    classifiers: dict[str, dict[str, Any]]
    default_scales: dict[str, float]
    default_steps: str
    default_sampler: str
    clip_denoised: bool = True
    max_scale: float = 100.0
    extra: dict[str, Any] = field(default_factory=dict)
    arms: dict[str, Arm] = field(default_factory=dict)
    comparison: tuple[str, str] = DEFAULT_COMPARISON
    unavailable: dict[str, str] = field(default_factory=dict)  # method -> why this preset cannot offer it

    @property
    def methods(self) -> tuple[str, ...]:
        return (NO_GUIDANCE,) + tuple(self.classifiers)

    @property
    def networks(self) -> tuple[str, ...]:
        """The methods whose classifier is a network of its own (trainable, attackable, plottable), in order;
        a method that guides with the diffusion model itself is a method but not one of these."""
        return tuple(m for m, entry in self.classifiers.items() if providers.get(entry.get("kind")).own_network)

    def guidance_cost(self, method: str) -> providers.StepCost:
        """Network evaluations one guided step of ``method`` adds per image (zero for ``none``)."""
        if method == NO_GUIDANCE:
            return providers.StepCost()
        return providers.step_cost(self.classifiers[method], self.num_classes)

    @property
    def guidance_choices(self) -> tuple[str, ...]:
        """What a generation request's ``guidance`` may say: a method, or ``pair``."""
        return self.methods + (PAIR,)

    @property
    def pair_methods(self) -> tuple[str, ...]:
        """The methods of the comparison's two arms, in sampling order."""
        return tuple(self.arms[name].method for name in self.comparison)

    def methods_for(self, guidance: str) -> tuple[str, ...]:
        """The methods a request with this ``guidance`` samples: the comparison's for ``pair``."""
        if guidance == PAIR:
            return self.pair_methods
        if guidance in self.unavailable:
            raise ValueError(f"guidance {guidance!r} is {self.not_offered(guidance)}; choose one of "
                             f"{', '.join(self.guidance_choices)}")
        if guidance not in self.methods:
            raise ValueError(f"guidance {guidance!r} is not one of {', '.join(self.guidance_choices)}")
        return (guidance,)

    def not_offered(self, method: str) -> str:
        """Why ``method`` is not a method here, for messages: the preset's reason when it has one."""
        if method in self.unavailable:
            return f"not available on preset {self.name!r}: {self.unavailable[method]}"
        return f"not a method of preset {self.name!r}"

    def judge_network(self) -> str | None:
        """The weights spec of the network that may judge this preset's images by class (class maximisation,
        the machine-rater pilot): its evaluation features when they are a digits network with a class head."""
        feats = self.extra.get("evaluation", {}).get("features", {})
        return feats["path"] if feats.get("kind") == "digits" and feats.get("path") else None

    def comparison_scales(self) -> dict[str, float]:
        """Method -> scale of the comparison's arms."""
        return {self.arms[name].method: self.arms[name].scale for name in self.comparison}

    def weights(self) -> dict[str, WeightsSpec]:
        """Role -> weights spec; roles are "diffusion" and "classifier:<method>"."""
        specs = {"diffusion": _weights_spec("diffusion model", self.diffusion.get("checkpoint", {}))}
        for method, cfg in self.classifiers.items():
            specs[f"classifier:{method}"] = _weights_spec(f"{method} classifier", cfg.get("checkpoint", {}))
        return specs

    def missing_checkpoints(self, methods: list[str] | None = None) -> list[str]:
        wanted = None if methods is None else {"diffusion", *(f"classifier:{m}" for m in methods if m != "none")}
        problems = []
        for role, spec in self.weights().items():
            if wanted is not None and role not in wanted:
                continue
            msg = spec.problem()
            if msg:
                problems.append(f"preset {self.name!r}: {msg}")
        return problems

    def resolve_label(self, label: int | str) -> int:
        """A class index from an index or a class name (case-insensitive)."""
        if isinstance(label, bool):
            raise ValueError(f"class label {label!r} is not an index or a class name")
        if isinstance(label, int):
            if not 0 <= label < self.num_classes:
                raise ValueError(
                    f"class label {label} is out of range for preset {self.name!r}: use 0..{self.num_classes - 1}")
            return label
        if isinstance(label, str):
            text = label.strip()
            if text.isdigit():
                return self.resolve_label(int(text))
            key = " ".join(text.replace("_", " ").lower().split())
            hits = [i for i, name in enumerate(self.class_names) if name.lower() == key]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ValueError(
                    f"class name {label!r} is ambiguous in preset {self.name!r} (indices {hits}); use an index")
            raise ValueError(f"class name {label!r} is not a class of preset {self.name!r}")
        raise ValueError(f"class label {label!r} is not an index or a class name")

    @property
    def num_timesteps(self) -> int:
        return int(self.diffusion.get("process", {}).get("diffusion_steps", 1000))

    def resolve_steps(self, steps: str | int | None = None, sampler: str | None = None) -> StepSpec:
        """The steps spec and sampler a request gets on this preset (``model_core.steps.resolve_steps``)."""
        return resolve_steps(steps, sampler, default_steps=self.default_steps, default_sampler=self.default_sampler,
                             num_timesteps=self.num_timesteps,
                             noise_schedule=self.diffusion.get("process", {}).get("noise_schedule", "linear"))

    def scale_for(self, method: str, scale: float | None) -> float:
        if method == "none":
            return 0.0
        return float(self.default_scales.get(method, 1.0) if scale is None else scale)

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "image_size": self.image_size,
            "channels": self.in_channels,
            "num_classes": self.num_classes,
            "classes": [{"index": i, "name": n} for i, n in enumerate(self.class_names)],
            "guidance_methods": list(self.guidance_choices),
            "unavailable_methods": dict(self.unavailable),
            "guidance_cost": {m: vars(self.guidance_cost(m)) for m in self.classifiers},
            "default_scales": dict(self.default_scales),
            "arms": [arm.to_public_dict() for arm in self.arms.values()],
            "comparison": list(self.comparison),
            "max_scale": self.max_scale,
            "default_steps": self.default_steps,
            "default_sampler": self.default_sampler,
            "available": not self.missing_checkpoints(),
        }


def _weights_spec(role: str, cfg: dict) -> WeightsSpec:
    return WeightsSpec(role=role, path=cfg.get("path"), env=cfg.get("env"), init_seed=cfg.get("init_seed"))


def _merged(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: nested objects merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merged(base[key], value)
        else:
            out[key] = value
    return out


def _raw(path: Path, seen: tuple[str, ...] = ()) -> dict:
    """A preset's JSON with its ``extends`` chain applied: a variant names its base and states only what differs,
    so a fact shared by two presets (an architecture, a classifier's weights) is written once."""
    raw = json.loads(path.read_text())
    base = raw.pop("extends", None)
    if base is None:
        return raw
    base_path = PRESET_DIR / f"{base}.json"
    if base in seen or base == path.stem:
        raise ValueError(f"preset {path.name}: 'extends' makes a cycle through {base!r}")
    if not base_path.is_file():
        raise ValueError(f"preset {path.name}: extends {base!r}, which is not a preset file")
    return _merged(_raw(base_path, seen + (path.stem,)), raw)


def _load(path: Path) -> Preset:
    raw = _raw(path)
    names = raw.get("class_names")
    if isinstance(names, str):  # a file under model_core/data, for long lists
        names = [line.strip() for line in (DATA_DIR / names).read_text().splitlines() if line.strip()]
    if len(names) != raw["num_classes"]:
        raise ValueError(f"preset {path.name}: {len(names)} class names for {raw['num_classes']} classes")
    for required in ("vanilla", "robust"):
        if required not in raw["classifiers"]:
            raise ValueError(f"preset {path.name}: a preset needs a {required!r} classifier")
    class_cond = bool(raw["diffusion"]["model"].get("class_cond", True))
    classifiers, unavailable = {}, {}
    for method, entry in raw["classifiers"].items():
        kind = entry.get("kind", providers.DEFAULT_KIND)
        if kind not in providers.kinds():
            raise ValueError(f"preset {path.name}: classifiers.{method}.kind {kind!r} is not a classifier kind; "
                             f"known kinds: {', '.join(providers.kinds())}")
        try:
            providers.step_cost(entry, int(raw["num_classes"]))  # the kind's own settings, checked now
        except ValueError as exc:
            raise ValueError(f"preset {path.name}: classifiers.{method}: {exc}") from None
        if providers.get(kind).needs_class_cond and not class_cond:
            unavailable[method] = (f"its diffusion model is unconditional (diffusion.model.class_cond is false) "
                                   f"and guidance kind {kind!r} needs eps(x_t, t, y) for every class")
            continue
        classifiers[method] = entry
    raw["classifiers"] = classifiers
    default_scales = {k: float(v) for k, v in raw["default_scales"].items() if k not in unavailable}
    arms = _arms(path.name, raw, default_scales)
    comparison = _comparison(path.name, raw, arms)
    return Preset(
        name=raw["name"], description=raw.get("description", ""), image_size=int(raw["image_size"]),
        in_channels=int(raw.get("in_channels", 3)), num_classes=int(raw["num_classes"]),
        class_names=tuple(names), diffusion=raw["diffusion"], classifiers=raw["classifiers"],
        default_scales=default_scales,
        default_steps=str(raw.get("default_steps", "250")), default_sampler=raw.get("default_sampler", "ddpm"),
        clip_denoised=bool(raw.get("clip_denoised", True)), max_scale=float(raw.get("max_scale", 100.0)),
        extra=raw.get("extra", {}), arms=arms, comparison=comparison, unavailable=unavailable,
    )


def _arms(where: str, raw: dict, default_scales: dict[str, float]) -> dict[str, Arm]:
    methods = (NO_GUIDANCE,) + tuple(raw["classifiers"])
    if "arms" not in raw:
        return {m: Arm(m, m, default_scales.get(m, 1.0)) for m in raw["classifiers"]}
    arms: dict[str, Arm] = {}
    for i, entry in enumerate(raw["arms"]):
        name, method = entry.get("name"), entry.get("method")
        if not isinstance(name, str) or not name or name == PAIR:
            raise ValueError(f"preset {where}: arms[{i}].name must be a non-empty name other than {PAIR!r}")
        if name in arms:
            raise ValueError(f"preset {where}: arms[{i}].name {name!r} is used twice")
        if method not in methods:
            raise ValueError(f"preset {where}: arms[{i}].method {method!r} is not one of {', '.join(methods)}")
        scale = 0.0 if method == NO_GUIDANCE else float(entry.get("scale", default_scales.get(method, 1.0)))
        if method != NO_GUIDANCE and not scale > 0:
            raise ValueError(f"preset {where}: arms[{i}].scale must be positive, got {scale}")
        arms[name] = Arm(name, method, scale)
    return arms


def _comparison(where: str, raw: dict, arms: dict[str, Arm]) -> tuple[str, str]:
    names = tuple(raw.get("comparison", DEFAULT_COMPARISON))
    if len(names) != 2:
        raise ValueError(f"preset {where}: comparison names {len(names)} arms; a pair compares exactly 2")
    for name in names:
        if name not in arms:
            raise ValueError(f"preset {where}: comparison names arm {name!r}, which is not one of "
                             f"{', '.join(arms)}")
    if arms[names[0]].method == arms[names[1]].method:
        # A pair job keys its images and scales by method (one image per label and method).
        raise ValueError(f"preset {where}: the comparison's arms must use two different methods")
    return names  # type: ignore[return-value]


@lru_cache(maxsize=None)
def _all() -> dict[str, Preset]:
    presets = {}
    for path in sorted(PRESET_DIR.glob("*.json")):
        preset = _load(path)
        presets[preset.name] = preset
    return presets


def list_presets() -> list[Preset]:
    return list(_all().values())


def get_preset(name: str | None = None) -> Preset:
    name = name or default_preset_name()
    try:
        return _all()[name]
    except KeyError:
        known = ", ".join(sorted(_all()))
        raise UnknownPresetError(f"preset {name!r} is unknown; known presets: {known}") from None


def default_preset_name() -> str:
    """``$RGUIDE_PRESET``, else the bundled demo when its weights are present, else ``tiny``."""
    env = settings.preset_name()
    if env:
        return env
    demo = _all().get("demo")
    if demo is not None and not demo.missing_checkpoints():
        return "demo"
    return "tiny"
