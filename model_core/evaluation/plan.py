"""What an evaluation computes, as plain data (torch-free): its rows, its images and their seeds, its shards.

``rguide evaluate`` in one process and the service's sharded evaluation
(``POST /v1/evaluations``, ``rguide evaluate --on-workers``) read the same
plan, so they sample the same images and compare them with the same real
features:

* a **row** is (sampler and steps, method, scale, seed set); its images are
  ``per_class`` of every class in class order, image i with seed
  ``first_seed + i``;
* a **shard** is a contiguous range of one row's images. Its seeds are the
  row's, so they depend on the evaluation alone, never on the worker or the
  shard size;
* **features** are extracted in blocks of ``feature_batch`` images aligned to
  the row's image index. A feature network's output moves by float rounding
  with the batch it is computed in, so fixing the blocks (and making every
  shard a whole number of blocks) is what makes a merged row's features, and
  so its FID, equal to the one-process run's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from model_core import settings as core_settings
from model_core.errors import SettingError

TABLE_METRICS = ("fid", "precision", "recall")
DEFAULT_FEATURE_BATCH = 256
DEFAULT_SHARD_SIZE = 256


@dataclass
class EvalSettings:
    preset: str
    methods: list[str] = field(default_factory=lambda: ["none", "vanilla", "robust"])
    scales: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0])
    per_class: int = 50
    steps: str | None = None
    sampler: str | None = None
    seed: int = 0
    features: str | None = None        # "digits" | "inception"; default: the preset's
    feature_weights: str | None = None  # path; default: the preset's
    real_data: str | None = None        # dataset spec; default: the preset's
    k: int = 3
    grid_per_class: int = 8
    samplers: list[str] | None = None   # "SAMPLER:STEPS" (or "STEPS") per row set; None: steps/sampler above
    method_scales: dict[str, list[float]] | None = None  # per-method scales, overriding ``scales``
    seed_noise: bool = False            # the reference rows again on a disjoint seed set
    feature_batch: int = DEFAULT_FEATURE_BATCH  # images per feature-network batch, aligned to the row's index

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["feature_batch"] == DEFAULT_FEATURE_BATCH:
            del d["feature_batch"]  # as before the setting existed
        return d


def _resolve_path(spec: str | None) -> str | None:
    if spec and spec.startswith("bundled:"):
        from model_core.presets import WEIGHTS_DIR

        return str(WEIGHTS_DIR / spec[len("bundled:"):])
    return spec


def evaluation_setup(preset, settings: EvalSettings) -> tuple[str, str | None, str, str]:
    """(feature kind, feature weights path, real-data spec, real split) from settings and preset."""
    ev = preset.extra.get("evaluation", {})
    feats = ev.get("features", {})
    kind = settings.features or feats.get("kind")
    if kind is None:
        raise SettingError("features", f"preset {preset.name!r} names no evaluation feature network: give "
                           "{features} inception with {feature_weights} PATH (or digits with {feature_weights})",
                           also=("feature_weights",))
    path = settings.feature_weights or _resolve_path(feats.get("path"))
    if path is None and feats.get("env"):
        path = core_settings.env(feats["env"])
    real = settings.real_data or ev.get("real_data")
    if real is None:
        raise SettingError("real_data", f"preset {preset.name!r} names no real images to compare with: give "
                           "{real_data} (a .npz file or a class folder)")
    split = ev.get("real_split", "test") if settings.real_data is None else "all"
    return kind, path, real, split


def method_rows(settings: EvalSettings, preset) -> list[tuple[str, float]]:
    rows = []
    for m in settings.methods:
        if m not in preset.methods:
            raise SettingError("methods", f"guidance {m!r} is {preset.not_offered(m)} "
                                          f"({', '.join(preset.methods)})")
        if m == "none":
            rows.append(("none", 0.0))
        else:
            scales = (settings.method_scales or {}).get(m, settings.scales)
            rows.extend((m, float(s)) for s in scales)
    if not rows:
        raise SettingError("methods", "nothing to evaluate: no methods given")
    return rows


def sampler_specs(settings: EvalSettings, preset) -> list:
    """The StepSpec of each row set: ``samplers`` entries ("ddpm:250", "ddim:ddim10", "ddim25"), else one."""
    from model_core.steps import parse_steps

    schedule = preset.diffusion.get("process", {}).get("noise_schedule", "linear")
    if not settings.samplers:
        try:
            return [parse_steps(settings.steps or preset.default_steps,
                                settings.sampler or (None if settings.steps else preset.default_sampler),
                                num_timesteps=preset.num_timesteps, noise_schedule=schedule)]
        except ValueError as exc:
            raise SettingError("steps", f"{{steps}}/{{sampler}}: {exc}", also=("sampler",)) from None
    specs, seen = [], set()
    for entry in settings.samplers:
        name, _, steps = entry.strip().rpartition(":")
        try:
            spec = parse_steps(steps, name or None, num_timesteps=preset.num_timesteps, noise_schedule=schedule)
        except ValueError as exc:
            raise SettingError("samplers", f"{{samplers}} entry {entry!r}: {exc}") from None
        if (spec.sampler, spec.spec) in seen:
            raise SettingError("samplers", f"{{samplers}} names {spec.sampler}:{spec.spec} twice")
        seen.add((spec.sampler, spec.spec))
        specs.append(spec)
    if not specs:
        raise SettingError("samplers", "{samplers} is empty: give e.g. ddpm:250,dpmpp_2m:20")
    return specs


@dataclass(frozen=True)
class Row:
    index: int
    sampler: str
    steps: str
    num_steps: int
    method: str
    scale: float
    seed_set: int       # 0: the table's seeds; 1: the reference rows again on seed + n + i (seed noise)
    first_seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    settings: EvalSettings
    preset: str
    rows: tuple[Row, ...]
    labels: tuple[int, ...]   # the labels of every row's images, in order
    feature_kind: str
    feature_weights: str | None
    real_data: str
    real_split: str

    @property
    def n(self) -> int:
        return len(self.labels)

    def seeds(self, row: Row, start: int = 0, stop: int | None = None) -> list[int]:
        stop = self.n if stop is None else stop
        return [row.first_seed + i for i in range(start, stop)]

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "n": self.n, "rows": [r.to_dict() for r in self.rows],
                "features": {"kind": self.feature_kind, "weights": self.feature_weights},
                "real": {"data": self.real_data, "split": self.real_split}}


def plan(settings: EvalSettings) -> Plan:
    """Resolve an evaluation's settings against its preset; every problem a SettingError naming its field."""
    from model_core.presets import get_preset

    try:
        preset = get_preset(settings.preset)
    except ValueError as exc:
        raise SettingError("preset", str(exc)) from None
    if settings.per_class < 1:
        raise SettingError("per_class", f"{{per_class}} must be >= 1, got {settings.per_class}")
    if settings.feature_batch < 1:
        raise SettingError("feature_batch", f"{{feature_batch}} must be >= 1, got {settings.feature_batch}")
    if settings.k < 1:
        raise SettingError("k", f"{{k}} must be >= 1, got {settings.k}")
    n = preset.num_classes * settings.per_class
    if n <= settings.k:
        raise SettingError("per_class", f"precision/recall with k={settings.k} need more than {settings.k} images "
                                        f"per row; {{per_class}} {settings.per_class} gives {n}", also=("k",))
    method_list = method_rows(settings, preset)
    specs = sampler_specs(settings, preset)
    kind, weights, real, split = evaluation_setup(preset, settings)
    rows: list[Row] = []
    for spec in specs:
        for m, sc in method_list:
            rows.append(Row(len(rows), spec.sampler, spec.spec, spec.num_steps, m, sc, 0, settings.seed))
    if settings.seed_noise:  # disjoint seeds: seed + n + i
        for m, sc in method_list:
            rows.append(Row(len(rows), specs[0].sampler, specs[0].spec, specs[0].num_steps, m, sc, 1,
                            settings.seed + n))
    labels = tuple(c for c in range(preset.num_classes) for _ in range(settings.per_class))
    return Plan(settings, preset.name, tuple(rows), labels, kind, weights, real, split)


@dataclass(frozen=True)
class Shard:
    row: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def shards(p: Plan, shard_size: int) -> list[Shard]:
    """Every row cut into ranges of ``shard_size`` images (the last may be shorter).

    ``shard_size`` must be a whole number of feature blocks, so no block is
    split between two shards (see the module's docstring).
    """
    fb = p.settings.feature_batch
    if shard_size < 1 or shard_size % fb:
        raise SettingError("shard_size", f"{{shard_size}} must be a positive multiple of {{feature_batch}} ({fb}), "
                                         f"got {shard_size}", also=("feature_batch",))
    return [Shard(r.index, a, min(a + shard_size, p.n)) for r in p.rows for a in range(0, p.n, shard_size)]


def settings_from_dict(d: dict[str, Any]) -> EvalSettings:
    fields = set(EvalSettings.__dataclass_fields__)
    unknown = set(d) - fields
    if unknown:
        raise SettingError(sorted(unknown)[0], f"unknown evaluation setting(s): {', '.join(sorted(unknown))}")
    return EvalSettings(**d)
