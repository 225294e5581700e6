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
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

from model_core.files import atomic_write, atomic_write_text

# The plan (rows, seeds, shards, feature blocks) is shared with the service's sharded evaluation.
from model_core.evaluation.plan import (TABLE_METRICS, EvalSettings, _resolve_path, evaluation_setup,  # noqa: F401
                                        sampler_specs)
from model_core.evaluation.plan import method_rows as _rows  # noqa: F401


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
                   progress: bool = True, on_progress: Callable[[int, int], None] | None = None,
                   reference_dir: str | Path | None = None) -> dict[str, Any]:
    """``on_progress(done, total)`` sees the sampling steps (the progress bar's count), for a worker's job row.

    The real images' features come from the stored reference
    (``model_core.evaluation.reference``; ``reference_dir``, default
    ``$RGUIDE_REFERENCE_DIR``), computed the first time.
    """
    from tqdm import tqdm

    from model_core.evaluation import shards as sh
    from model_core.evaluation.metrics import load_extractor
    from model_core.evaluation.plan import plan as make_plan
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset

    p = make_plan(settings)
    preset = get_preset(p.preset)
    extractor = load_extractor(p.feature_kind, p.feature_weights)
    ref = sh.real_reference(p, extractor, reference_dir)
    if tuple(ref.info["real"]["shape"]) != (preset.in_channels, preset.image_size, preset.image_size):
        raise ValueError(f"real images are {tuple(ref.info['real']['shape'])} but preset {preset.name!r} makes "
                         f"{(preset.in_channels, preset.image_size, preset.image_size)}")

    pipe = get_pipeline(preset.name, device)
    labels, n = list(p.labels), p.n
    out = Path(out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "grids").mkdir(parents=True, exist_ok=True)

    chunks = math.ceil(n / pipe.max_batch)
    total = sum(chunks * row.num_steps for row in p.rows)
    bar = tqdm(total=total, desc=f"evaluate {preset.name}", unit="step", disable=not progress)
    multi = len({(r.sampler, r.steps) for r in p.rows}) > 1
    results: dict[int, dict[str, Any]] = {}
    done = [0]  # tqdm does not count while disabled

    def advance(k: int) -> None:
        bar.update(k)
        done[0] += k
        if on_progress is not None:
            on_progress(done[0], total)

    for row in p.rows:
        seeds = p.seeds(row)
        key = _row_key(pipe, settings, row.method, row.scale, row.steps, row.sampler, seed=row.first_seed)
        cache = out / "samples" / f"{row.method}_s{row.scale:g}_{key}.npz"
        bar.set_postfix(sampler=f"{row.sampler}:{row.steps}", method=row.method, scale=row.scale)
        seconds = None
        if cache.is_file():
            stored = np.load(cache)
            images = stored["images"]
            if "seconds_per_image" in stored.files:
                seconds = float(stored["seconds_per_image"])
            advance(chunks * row.num_steps)
        else:
            start = time.perf_counter()
            images = np.stack(pipe.sample(labels, seeds, row.method, row.scale, row.steps, row.sampler,
                                          callback=lambda *a: advance(1)))
            seconds = (time.perf_counter() - start) / n
            atomic_write(cache, lambda q: np.savez_compressed(q, images=images, labels=np.array(labels),
                                                              seeds=np.array(seeds),
                                                              seconds_per_image=np.array(seconds)),
                         suffix=".tmp.npz")
        features, predictions = sh.block_features(extractor, images, settings.feature_batch)
        results[row.index] = sh.row_result(p, row, features, predictions, ref.features, seconds, cache.name)
        if row.seed_set == 0:
            _save_grid(out, preset, settings, row, row.method, row.scale, images, tag=multi)
    bar.close()

    report = build_report(p, sh.merge_rows(p, results), ref, {
        "threads": torch.get_num_threads(), "device": pipe.device,
        "note": "seconds per image: wall time of the row's sampling divided by its images, in batches of up to "
                "max_batch; rows read from the cache keep the time they took"}, pipe.provenance())
    write_report(report, out)
    return report


def build_report(p, rows: list[dict[str, Any]], ref, timing: dict[str, Any], provenance: dict[str, Any],
                 command: str = "rguide evaluate") -> dict[str, Any]:
    """The results.json of an evaluation, from its merged rows (one process or many shards alike)."""
    settings = p.settings
    first = p.rows[0]
    specs = list(dict.fromkeys(f"{r.sampler}:{r.steps}" for r in p.rows))
    report = {
        "command": command,
        "settings": {**settings.to_dict(), "steps": first.steps, "sampler": first.sampler, "samplers": specs},
        "seeds": {"rule": "image i (labels in class order, per_class each) uses seed + i in every row",
                  "first": settings.seed, "last": settings.seed + p.n - 1},
        "features": {"kind": p.feature_kind, "weights": p.feature_weights,
                     "num_features": int(ref.features.shape[1]),
                     "feature_batch": settings.feature_batch},
        "reference": {"file": ref.path.name, "weights_sha256": ref.info.get("weights_sha256")},
        "real": ref.info["real"], "n_generated_per_row": p.n, "rows": rows,
        "timing": timing, "provenance": provenance,
    }
    if settings.seed_noise:
        report["seed_noise"] = seed_noise(rows, SimpleNamespace(sampler=first.sampler, spec=first.steps))
    return report


def write_report(report: dict[str, Any], out: Path) -> None:
    """results.json, results.md and, with several samplers, the quality-against-cost plot."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    multi = len(report["settings"]["samplers"]) > 1
    if multi:
        from model_core.evaluation.cost_plot import plot_quality_against_cost

        report["plot"] = str(plot_quality_against_cost(report, out / "quality_vs_evaluations.png"))
    atomic_write_text(out / "results.json", json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(report))


def _save_grid(out: Path, preset, settings: EvalSettings, row, method: str, scale: float, images, *, tag: bool):
    from model_core.images import grid, save_png

    picks = [i for c in range(preset.num_classes)
             for i in range(c * settings.per_class, c * settings.per_class + min(settings.grid_per_class,
                                                                                  settings.per_class))]
    name = (f"{row.sampler}-{row.steps}_" if tag else "") + f"{method}_s{scale:g}.png"
    save_png(grid([images[i] for i in picks], ncols=min(settings.grid_per_class, settings.per_class)),
             out / "grids" / name,
             {"preset": preset.name, "method": method, "scale": scale, "steps": row.steps,
              "sampler": row.sampler, "seeds": f"{settings.seed}+i, rows = classes"})


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
    lines = [f"Network evaluations per image: UNet forwards (the sampler's, plus classes x (draws + 1) per step "
             f"for guidance by the diffusion model itself), and classifier forward + backward pairs (guided rows); "
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
