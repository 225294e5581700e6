"""Automatic evaluation of guidance methods: FID, precision and recall per method and scale.

The table has the shape of Kawar et al.'s Tables 1, 5 and 6: one row per
(method, scale), plus the unguided model once. Every row samples the same
labels with the *same seeds* (image i uses seed ``seed + i`` whatever the
method), so rows differ only by their guidance. Generated images are compared
with real held-out images in the feature space of the preset's evaluation
network (``extra.evaluation`` in the preset JSON: the bundled digit CNN for the
demo; Inception-V3 from a user-given file elsewhere).

Each row's images are cached in ``OUT/samples`` under a key of all settings
that shape them, so an interrupted evaluation continues where it stopped and
adding a scale samples only the new rows.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from model_core import settings as core_settings
from model_core.errors import SettingError
from model_core.files import atomic_write, atomic_write_text

TABLE_METRICS = ("fid", "precision", "recall")


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


def _rows(settings: EvalSettings, preset) -> list[tuple[str, float]]:
    rows = []
    for m in settings.methods:
        if m not in preset.methods:
            raise ValueError(f"guidance {m!r} is not a method of preset {preset.name!r} "
                             f"({', '.join(preset.methods)})")
        if m == "none":
            rows.append(("none", 0.0))
        else:
            rows.extend((m, float(s)) for s in settings.scales)
    if not rows:
        raise ValueError("nothing to evaluate: no methods given")
    return rows


def _row_key(pipe, settings: EvalSettings, method: str, scale: float, steps: str, sampler: str) -> str:
    # Only the networks a row samples with: retraining one classifier keeps the
    # other methods' cached rows.
    used = ["diffusion"] + ([f"classifier:{method}"] if method != "none" else [])
    weights = {name: pipe.sources[name] for name in used}
    blob = json.dumps({"weights": weights, "labels_per_class": settings.per_class, "seed": settings.seed,
                       "method": method, "scale": scale, "steps": steps, "sampler": sampler}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_evaluation(settings: EvalSettings, out: str | Path, *, device: str | None = None,
                   progress: bool = True, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``on_progress(done, total)`` sees the sampling steps (the progress bar's count), for a worker's job row."""
    from tqdm import tqdm

    from model_core.data import load_dataset
    from model_core.images import grid, save_png
    from model_core.evaluation.metrics import extract_features, load_extractor, quality_metrics
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset
    from model_core.steps import parse_steps

    preset = get_preset(settings.preset)
    if settings.per_class < 1:
        raise SettingError("per_class", f"{{per_class}} must be >= 1, got {settings.per_class}")
    rows = _rows(settings, preset)
    spec = parse_steps(settings.steps or preset.default_steps,
                       settings.sampler or (None if settings.steps else preset.default_sampler))
    kind, weights, real_spec, real_split = evaluation_setup(preset, settings)
    extractor = load_extractor(kind, weights)
    real_ds = load_dataset(real_spec, split=real_split, setting="real_data")
    if real_ds.images.shape[1:] != (preset.in_channels, preset.image_size, preset.image_size):
        raise ValueError(f"real images are {tuple(real_ds.images.shape[1:])} but preset {preset.name!r} makes "
                         f"{(preset.in_channels, preset.image_size, preset.image_size)}")
    real_feats = extract_features(extractor, real_ds.images)
    classify = getattr(extractor, "logits", None)

    pipe = get_pipeline(preset.name, device)
    labels = [c for c in range(preset.num_classes) for _ in range(settings.per_class)]
    seeds = [settings.seed + i for i in range(len(labels))]
    out = Path(out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "grids").mkdir(parents=True, exist_ok=True)

    chunks = math.ceil(len(labels) / pipe.max_batch)
    bar = tqdm(total=len(rows) * chunks * spec.num_steps, desc=f"evaluate {preset.name}", unit="step",
               disable=not progress)
    results = []

    done = [0]  # tqdm does not count while disabled

    def advance(n: int) -> None:
        bar.update(n)
        done[0] += n
        if on_progress is not None:
            on_progress(done[0], len(rows) * chunks * spec.num_steps)

    for method, scale in rows:
        key = _row_key(pipe, settings, method, scale, spec.spec, spec.sampler)
        cache = out / "samples" / f"{method}_s{scale:g}_{key}.npz"
        bar.set_postfix(method=method, scale=scale)
        if cache.is_file():
            images = np.load(cache)["images"]
            advance(chunks * spec.num_steps)
        else:
            images = np.stack(pipe.sample(labels, seeds, method, scale, spec.spec, spec.sampler,
                                          callback=lambda *a: advance(1)))
            atomic_write(cache, lambda p: np.savez_compressed(p, images=images, labels=np.array(labels),
                                                              seeds=np.array(seeds)), suffix=".tmp.npz")
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        fake_feats = extract_features(extractor, x)
        q = quality_metrics(real_feats, fake_feats, k=settings.k)
        row: dict[str, Any] = {"method": method, "scale": scale, **q.to_dict(), "samples": str(cache.name)}
        if classify is not None:
            with torch.no_grad():
                preds = torch.cat([classify(x[i:i + 500]).argmax(-1) for i in range(0, len(x), 500)])
            row["label_accuracy"] = float((preds == torch.tensor(labels)).double().mean())
        results.append(row)
        picks = [i for c in range(preset.num_classes)
                 for i in range(c * settings.per_class, c * settings.per_class + min(settings.grid_per_class,
                                                                                      settings.per_class))]
        save_png(grid([images[i] for i in picks], ncols=min(settings.grid_per_class, settings.per_class)),
                 out / "grids" / f"{method}_s{scale:g}.png",
                 {"preset": preset.name, "method": method, "scale": scale, "steps": spec.spec,
                  "sampler": spec.sampler, "seeds": f"{settings.seed}+i, rows = classes"})
    bar.close()

    report = {
        "command": "rguide evaluate", "settings": {**asdict(settings), "steps": spec.spec, "sampler": spec.sampler},
        "seeds": {"rule": "image i (labels in class order, per_class each) uses seed + i in every row",
                  "first": seeds[0], "last": seeds[-1]},
        "features": {"kind": kind, "weights": weights, "num_features": int(real_feats.shape[1])},
        "real": real_ds.describe(), "n_generated_per_row": len(labels), "rows": results,
        "provenance": pipe.provenance(),
    }
    atomic_write_text(out / "results.json", json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(report))
    return report


def markdown_table(report: dict) -> str:
    """The long table (one row per method and scale) and a per-metric pivot like the paper's Table 6."""
    rows = report["rows"]
    s = report["settings"]
    has_acc = any("label_accuracy" in r for r in rows)
    lines = [f"# Evaluation of preset `{s['preset']}`", "",
             f"{report['n_generated_per_row']} generated images per row ({s['per_class']} per class), steps "
             f"`{s['steps']}` ({s['sampler']}), seeds {report['seeds']['first']}..{report['seeds']['last']} shared by "
             f"every row; {report['real']['num_images']} real images ({report['real']['source']}, "
             f"{report['real']['split'].get('split', 'all')}); features: {report['features']['kind']} "
             f"({report['features']['num_features']}-d); precision/recall with k={s['k']}.", "",
             "| Guidance | Scale | FID (lower is better) | Precision | Recall |" + (" Label accuracy |" if has_acc else ""),
             "|---|---:|---:|---:|---:|" + ("---:|" if has_acc else "")]
    for r in rows:
        scale = "-" if r["method"] == "none" else f"{r['scale']:g}"
        acc = f" {r['label_accuracy']:.3f} |" if has_acc else ""
        lines.append(f"| {r['method']} | {scale} | {r['fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} |{acc}")
    scales = sorted({r["scale"] for r in rows if r["method"] != "none"})
    base = next((r for r in rows if r["method"] == "none"), None)
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "none"]
    if scales and methods:
        cols = ([0.0] if base else []) + scales
        lines += ["", "| Classifier | Metric | " + " | ".join(f"s={c:g}" for c in cols) + " |",
                  "|---|---|" + "---:|" * len(cols)]
        for m in methods:
            for metric in TABLE_METRICS + (("label_accuracy",) if has_acc else ()):
                cells = []
                for c in cols:
                    r = base if c == 0.0 and base else next((x for x in rows if x["method"] == m and x["scale"] == c),
                                                            None)
                    v = None if r is None else r.get(metric)
                    cells.append("-" if v is None else (f"{v:.2f}" if metric == "fid" else f"{v:.3f}"))
                lines.append(f"| {m} | {metric} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Code {report['provenance'].get('code_version')}, torch {report['provenance'].get('torch')}.")
    return "\n".join(lines) + "\n"
