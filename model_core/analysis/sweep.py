"""Tables 5 and 6: FID, precision, recall and label accuracy per method across guidance scales, as curves.

The numbers are ``rguide evaluate``'s (``model_core.evaluation.quality``:
every row samples the same labels with the same seeds, compared with the
preset's real held-out images in its evaluation network's feature space);
this module draws them as the paper discusses them, precision against recall
(each method a curve through its scales, the unguided model a point) and FID
against scale, plus label accuracy against scale where the feature network
classifies, and writes the table in the paper's layout (Table 6: one row per
classifier and metric, one column per scale, s = 0 the unguided model).

Plots use matplotlib's Agg backend with the fonts matplotlib bundles, and no
date in the PNG, so the same versions draw the same bytes.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

from model_core.analysis.common import Progress, UploadFinder
from model_core.analysis.sidecar import Output

METRICS = ("fid", "precision", "recall", "label_accuracy")


def plot(rows: list[dict], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    has_acc = any("label_accuracy" in r for r in rows)
    base = next((r for r in rows if r["method"] == "none"), None)
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "none"]
    fig = Figure(figsize=(4.0 * (3 if has_acc else 2), 3.6), dpi=100)
    axes = fig.subplots(1, 3 if has_acc else 2)
    ax = axes[0]
    for m in methods:
        mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["scale"])
        ax.plot([r["recall"] for r in mine], [r["precision"] for r in mine], marker="o", label=m)
        for r in mine:
            ax.annotate(f"{r['scale']:g}", (r["recall"], r["precision"]), textcoords="offset points",
                        xytext=(4, 3), fontsize=7)
    if base:
        ax.plot([base["recall"]], [base["precision"]], marker="*", markersize=11, linestyle="", color="black",
                label="unguided")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision against recall (labels: scale)", fontsize=9)
    ax.legend(fontsize=8)
    panels = [("fid", "FID (lower is better)")] + ([("label_accuracy", "label accuracy")] if has_acc else [])
    for ax, (metric, name) in zip(axes[1:], panels):
        for m in methods:
            mine = sorted((r for r in rows if r["method"] == m and metric in r), key=lambda r: r["scale"])
            ax.plot([r["scale"] for r in mine], [r[metric] for r in mine], marker="o", label=m)
        if base and metric in base:
            ax.axhline(base[metric], color="black", linestyle="--", linewidth=1, label="unguided")
        ax.set_xscale("log", base=2)
        scales = sorted({r["scale"] for r in rows if r["method"] != "none"})
        ax.set_xticks(scales, [f"{v:g}" for v in scales])
        ax.minorticks_off()
        ax.set_xlabel("guidance scale s")
        ax.set_ylabel(name)
        ax.set_title(f"{name} against scale", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def run(settings: dict, *, find_upload: UploadFinder | None = None, device: str | None = None,
        progress: Progress | None = None, work_dir: str | Path | None = None) -> Output:
    """``work_dir`` keeps ``rguide evaluate``'s sample cache and grids (a fresh temporary folder if None)."""
    from model_core.evaluation.quality import EvalSettings, markdown_table, run_evaluation

    ev = EvalSettings(preset=settings["preset"], methods=list(settings["methods"]), scales=list(settings["scales"]),
                      per_class=settings["per_class"], steps=settings["steps"], sampler=settings["sampler"],
                      seed=settings["seed"], k=settings["k"])
    with tempfile.TemporaryDirectory(prefix="rguide-sweep-") as tmp:
        report = run_evaluation(ev, work_dir or tmp, device=device, progress=False, on_progress=progress)
    rows = [{k: r[k] for k in ("method", "scale", *METRICS) if k in r} for r in report["rows"]]
    s = report["settings"]
    title = (f"preset {s['preset']}: {report['n_generated_per_row']} images per row, {s['steps']} steps "
             f"({s['sampler']}), features {report['features']['kind']}")
    files = {"sweep.png": plot(rows, title), "sweep.md": markdown_table(report).encode()}
    summary = {"rows": rows, "n_generated_per_row": report["n_generated_per_row"],
               "n_real": report["real"]["num_images"]}
    import matplotlib

    from model_core.analysis.common import provenance
    from model_core.pipeline import get_pipeline

    prov = provenance(get_pipeline(settings["preset"], device), matplotlib=matplotlib.__version__)
    return Output("sweep", settings, files, summary, prov,
                  extra={"seeds": report["seeds"], "features": report["features"], "real": report["real"]})
