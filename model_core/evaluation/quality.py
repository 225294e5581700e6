"""Automatic evaluation of guidance methods: FID, precision and recall per method and scale (and sampler).

The table has the shape of Kawar et al.'s Tables 1, 5 and 6: one row per
(method, scale), plus the unguided model once. Every row samples the same
labels with the *same seeds* (image i uses seed ``seed + i`` whatever the
method), so rows differ only by their guidance. Generated images are compared
with real held-out images in the feature space of the preset's evaluation
network (``extra.evaluation`` in the preset JSON: the bundled digit CNN for the
demo; Inception-V3 from a user-given file elsewhere).

With ``samplers`` (``["ddpm:250", "ddim:ddim10", "dpmpp_2m:20", ...]``) the
whole method x scale table is repeated for each sampler and step count, on
the same seeds, and every row records its cost: network evaluations per
image (UNet forwards; classifier forward + backward pairs) and seconds per
image. ``seed_noise`` samples the reference rows (the first sampler's) a
second time on a disjoint seed set (``seed + N + i``), so the table says how
much a metric moves between seed sets alone.

Each row's images are cached in ``OUT/samples`` under a key of all settings
that shape them, so an interrupted evaluation continues where it stopped and
adding a scale or a sampler samples only the new rows.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
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
    samplers: list[str] | None = None   # "SAMPLER:STEPS" (or "STEPS") per row set; None: steps/sampler above
    method_scales: dict[str, list[float]] | None = None  # per-method scales, overriding ``scales``
    seed_noise: bool = False            # the reference rows again on a disjoint seed set


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
            scales = (settings.method_scales or {}).get(m, settings.scales)
            rows.extend((m, float(s)) for s in scales)
    if not rows:
        raise ValueError("nothing to evaluate: no methods given")
    return rows


def sampler_specs(settings: EvalSettings, preset) -> list:
    """The StepSpec of each row set: ``samplers`` entries ("ddpm:250", "ddim:ddim10", "ddim25"), else one."""
    from model_core.steps import parse_steps

    if not settings.samplers:
        return [parse_steps(settings.steps or preset.default_steps,
                            settings.sampler or (None if settings.steps else preset.default_sampler),
                            num_timesteps=preset.num_timesteps,
                            noise_schedule=preset.diffusion.get("process", {}).get("noise_schedule", "linear"))]
    specs, seen = [], set()
    for entry in settings.samplers:
        name, _, steps = entry.strip().rpartition(":")
        try:
            spec = parse_steps(steps, name or None, num_timesteps=preset.num_timesteps,
                               noise_schedule=preset.diffusion.get("process", {}).get("noise_schedule", "linear"))
        except ValueError as exc:
            raise SettingError("samplers", f"{{samplers}} entry {entry!r}: {exc}") from None
        if (spec.sampler, spec.spec) in seen:
            raise SettingError("samplers", f"{{samplers}} names {spec.sampler}:{spec.spec} twice")
        seen.add((spec.sampler, spec.spec))
        specs.append(spec)
    if not specs:
        raise SettingError("samplers", "{samplers} is empty: give e.g. ddpm:250,dpmpp_2m:20")
    return specs


def _row_key(pipe, settings: EvalSettings, method: str, scale: float, steps: str, sampler: str,
             seed: int | None = None) -> str:
    # Only the networks a row samples with: retraining one classifier keeps the
    # other methods' cached rows.
    from model_core import runtime

    used = ["diffusion"] + ([f"classifier:{method}"] if method != "none" else [])
    weights = {name: pipe.sources[name] for name in used}
    fields = {"weights": weights, "labels_per_class": settings.per_class,
              "seed": settings.seed if seed is None else seed,
              "method": method, "scale": scale, "steps": steps, "sampler": sampler}
    speed = runtime.describe()
    if speed != runtime.DEFAULTS:  # only settings that change images enter the key (old caches stay valid)
        fields["runtime"] = speed
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_evaluation(settings: EvalSettings, out: str | Path, *, device: str | None = None,
                   progress: bool = True, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``on_progress(done, total)`` sees the sampling steps (the progress bar's count), for a worker's job row."""
    from tqdm import tqdm

    from model_core.data import load_dataset
    from model_core.evaluation.metrics import extract_features, load_extractor, quality_metrics
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset

    preset = get_preset(settings.preset)
    if settings.per_class < 1:
        raise SettingError("per_class", f"{{per_class}} must be >= 1, got {settings.per_class}")
    rows = _rows(settings, preset)
    specs = sampler_specs(settings, preset)
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
    n = len(labels)
    seed_sets = [settings.seed] + ([settings.seed + n] if settings.seed_noise else [])  # disjoint: seed + n + i
    out = Path(out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "grids").mkdir(parents=True, exist_ok=True)

    # (spec, method, scale, seed-set index): every row set on the first seeds, then the reference's again.
    plan = [(spec, m, sc, 0) for spec in specs for m, sc in rows]
    plan += [(specs[0], m, sc, 1) for m, sc in rows] if settings.seed_noise else []
    chunks = math.ceil(n / pipe.max_batch)
    total = sum(chunks * spec.num_steps for spec, *_ in plan)
    bar = tqdm(total=total, desc=f"evaluate {preset.name}", unit="step", disable=not progress)
    multi = len(specs) > 1
    results = []
    done = [0]  # tqdm does not count while disabled

    def advance(k: int) -> None:
        bar.update(k)
        done[0] += k
        if on_progress is not None:
            on_progress(done[0], total)

    for spec, method, scale, seed_set in plan:
        first = seed_sets[seed_set]
        seeds = [first + i for i in range(n)]
        key = _row_key(pipe, settings, method, scale, spec.spec, spec.sampler, seed=first)
        cache = out / "samples" / f"{method}_s{scale:g}_{key}.npz"
        bar.set_postfix(sampler=f"{spec.sampler}:{spec.spec}", method=method, scale=scale)
        seconds = None
        if cache.is_file():
            stored = np.load(cache)
            images = stored["images"]
            if "seconds_per_image" in stored.files:
                seconds = float(stored["seconds_per_image"])
            advance(chunks * spec.num_steps)
        else:
            start = time.perf_counter()
            images = np.stack(pipe.sample(labels, seeds, method, scale, spec.spec, spec.sampler,
                                          callback=lambda *a: advance(1)))
            seconds = (time.perf_counter() - start) / n
            atomic_write(cache, lambda p: np.savez_compressed(p, images=images, labels=np.array(labels),
                                                              seeds=np.array(seeds),
                                                              seconds_per_image=np.array(seconds)),
                         suffix=".tmp.npz")
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        fake_feats = extract_features(extractor, x)
        q = quality_metrics(real_feats, fake_feats, k=settings.k)
        row: dict[str, Any] = {
            "sampler": spec.sampler, "steps": spec.spec, "method": method, "scale": scale, **q.to_dict(),
            "unet_evals_per_image": spec.num_steps,
            "classifier_evals_per_image": spec.num_steps if method != "none" else 0,  # forward + backward each
            "seconds_per_image": seconds, "seeds": {"first": seeds[0], "last": seeds[-1]},
            "samples": str(cache.name)}
        if classify is not None:
            with torch.no_grad():
                preds = torch.cat([classify(x[i:i + 500]).argmax(-1) for i in range(0, len(x), 500)])
            row["label_accuracy"] = float((preds == torch.tensor(labels)).double().mean())
        if seed_set == 0:
            results.append(row)
            _save_grid(out, preset, settings, spec, method, scale, images, tag=multi)
        else:
            twin = next(r for r in results if (r["sampler"], r["steps"], r["method"], r["scale"])
                        == (spec.sampler, spec.spec, method, scale))
            twin["second_seed_set"] = {k: row[k] for k in (*TABLE_METRICS, "label_accuracy", "seeds",
                                                           "samples") if k in row}
    bar.close()

    first_spec = specs[0]
    report = {
        "command": "rguide evaluate",
        "settings": {**asdict(settings), "steps": first_spec.spec, "sampler": first_spec.sampler,
                     "samplers": [f"{s.sampler}:{s.spec}" for s in specs]},
        "seeds": {"rule": "image i (labels in class order, per_class each) uses seed + i in every row",
                  "first": settings.seed, "last": settings.seed + n - 1},
        "features": {"kind": kind, "weights": weights, "num_features": int(real_feats.shape[1])},
        "real": real_ds.describe(), "n_generated_per_row": n, "rows": results,
        "timing": {"threads": torch.get_num_threads(), "device": pipe.device,
                   "note": "seconds per image: wall time of the row's sampling divided by its images, in "
                           "batches of up to max_batch; rows read from the cache keep the time they took"},
        "provenance": pipe.provenance(),
    }
    if settings.seed_noise:
        report["seed_noise"] = seed_noise(results, specs[0])
    atomic_write_text(out / "results.json", json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(report))
    if multi:
        from model_core.evaluation.cost_plot import plot_quality_against_cost

        report["plot"] = str(plot_quality_against_cost(report, out / "quality_vs_evaluations.png"))
    return report


def _save_grid(out: Path, preset, settings: EvalSettings, spec, method: str, scale: float, images, *, tag: bool):
    from model_core.images import grid, save_png

    picks = [i for c in range(preset.num_classes)
             for i in range(c * settings.per_class, c * settings.per_class + min(settings.grid_per_class,
                                                                                  settings.per_class))]
    name = (f"{spec.sampler}-{spec.spec}_" if tag else "") + f"{method}_s{scale:g}.png"
    save_png(grid([images[i] for i in picks], ncols=min(settings.grid_per_class, settings.per_class)),
             out / "grids" / name,
             {"preset": preset.name, "method": method, "scale": scale, "steps": spec.spec,
              "sampler": spec.sampler, "seeds": f"{settings.seed}+i, rows = classes"})


def seed_noise(rows: list[dict], reference) -> dict[str, Any]:
    """How far each metric moved between the reference rows' two disjoint seed sets: the noise floor."""
    per_row, worst = [], {}
    for r in rows:
        other = r.get("second_seed_set")
        if other is None:
            continue
        diffs = {m: abs(r[m] - other[m]) for m in (*TABLE_METRICS, "label_accuracy") if m in r and m in other}
        per_row.append({"method": r["method"], "scale": r["scale"], "differences": diffs})
        for m, v in diffs.items():
            worst[m] = max(worst.get(m, 0.0), v)
    return {"reference": f"{reference.sampler}:{reference.spec}", "rows": per_row, "max_difference": worst,
            "rule": "the reference rows sampled again with seeds seed + N + i (disjoint from every row's); "
                    "a difference between rows smaller than max_difference is within seed-to-seed noise"}


def markdown_table(report: dict) -> str:
    """One sampler: the long table (one row per method and scale) and a per-metric pivot like the paper's
    Table 6. Several samplers: one cost table (network evaluations and seconds per image beside the metrics).
    Either way the seed-to-seed noise of the reference rows when it was measured."""
    rows = report["rows"]
    s = report["settings"]
    has_acc = any("label_accuracy" in r for r in rows)
    samplers = s.get("samplers") or [f"{s['sampler']}:{s['steps']}"]
    steps_text = (f"steps `{s['steps']}` ({s['sampler']})" if len(samplers) == 1 else
                  "samplers " + ", ".join(f"`{x}`" for x in samplers))
    lines = [f"# Evaluation of preset `{s['preset']}`", "",
             f"{report['n_generated_per_row']} generated images per row ({s['per_class']} per class), {steps_text}, "
             f"seeds {report['seeds']['first']}..{report['seeds']['last']} shared by "
             f"every row; {report['real']['num_images']} real images ({report['real']['source']}, "
             f"{report['real']['split'].get('split', 'all')}); features: {report['features']['kind']} "
             f"({report['features']['num_features']}-d); precision/recall with k={s['k']}.", ""]
    if len(samplers) > 1:
        lines += _cost_table(report, has_acc)
    else:
        lines += _method_tables(rows, has_acc)
    if report.get("seed_noise"):
        lines += _noise_table(report["seed_noise"], has_acc)
    lines.append("")
    lines.append(f"Code {report['provenance'].get('code_version')}, torch {report['provenance'].get('torch')}.")
    return "\n".join(lines) + "\n"


def _fmt(metric: str, v) -> str:
    return "-" if v is None else (f"{v:.2f}" if metric == "fid" else f"{v:.3f}")


def _method_tables(rows: list[dict], has_acc: bool) -> list[str]:
    lines = ["| Guidance | Scale | FID (lower is better) | Precision | Recall |" + (" Label accuracy |" if has_acc else ""),
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
                    cells.append(_fmt(metric, None if r is None else r.get(metric)))
                lines.append(f"| {m} | {metric} | " + " | ".join(cells) + " |")
    return lines


def _cost_table(report: dict, has_acc: bool) -> list[str]:
    timing = report.get("timing", {})
    lines = [f"Network evaluations per image: UNet forwards, and classifier forward + backward pairs (guided rows); "
             f"seconds per image on {timing.get('device', '?')} with {timing.get('threads', '?')} threads.", "",
             "| Sampler | Steps | Guidance | Scale | UNet evals | Classifier evals | s / image | FID | Precision | "
             "Recall |" + (" Label accuracy |" if has_acc else ""),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if has_acc else "")]
    for r in report["rows"]:
        scale = "-" if r["method"] == "none" else f"{r['scale']:g}"
        secs = "-" if r.get("seconds_per_image") is None else f"{r['seconds_per_image']:.3f}"
        acc = f" {r['label_accuracy']:.3f} |" if has_acc else ""
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['method']} | {scale} | {r['unet_evals_per_image']} | "
                     f"{r['classifier_evals_per_image']} | {secs} | {r['fid']:.2f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} |{acc}")
    return lines


def _noise_table(noise: dict, has_acc: bool) -> list[str]:
    metrics = TABLE_METRICS + (("label_accuracy",) if has_acc else ())
    lines = ["", f"Seed-to-seed noise: the reference rows (`{noise['reference']}`) on a second, disjoint seed set; "
                 "|difference| per metric. Differences between rows below the last line are within noise.", "",
             "| Guidance | Scale | " + " | ".join(f"abs. diff. {m}" for m in metrics) + " |",
             "|---|---:|" + "---:|" * len(metrics)]
    for r in noise["rows"]:
        scale = "-" if r["method"] == "none" else f"{r['scale']:g}"
        lines.append(f"| {r['method']} | {scale} | " + " | ".join(_fmt(m, r["differences"].get(m)) for m in metrics)
                     + " |")
    lines.append("| **largest** | | " + " | ".join(_fmt(m, noise["max_difference"].get(m)) for m in metrics) + " |")
    return lines
