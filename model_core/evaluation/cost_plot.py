"""FID (and label accuracy) against network evaluations per image, from an `rguide evaluate` report.

One column per guidance method, one line per sampler and scale (points at its
step counts; the marker tells the scale), the reference rows (the first
sampler's) as a horizontal line with a band of +- that row's seed-to-seed
difference when it was measured (``--seed-noise``). matplotlib is a
dependency of the project.

    python -m model_core.evaluation.cost_plot OUT/results.json docs/quality_vs_evaluations.png
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")


def plot_quality_against_cost(report: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    metrics = ["fid"] + (["label_accuracy"] if any("label_accuracy" in r for r in rows) else [])
    reference = report["settings"]["samplers"][0]
    noise_rows = (report.get("seed_noise") or {}).get("rows", [])
    noise = {(r["method"], r["scale"]): r["differences"] for r in noise_rows}
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    colors = {name: f"C{i}" for i, name in enumerate(samplers)}
    fig, axes = plt.subplots(len(metrics), len(methods), figsize=(4.2 * len(methods), 3.4 * len(metrics)),
                             squeeze=False, sharex=True)
    for col, method in enumerate(methods):
        scales = sorted({r["scale"] for r in rows if r["method"] == method})
        for row_i, metric in enumerate(metrics):
            ax = axes[row_i][col]
            lines = defaultdict(list)
            for r in rows:
                if r["method"] == method and metric in r:
                    lines[(r["sampler"], r["scale"])].append((r["unet_evals_per_image"], r[metric], r["steps"]))
            for (sampler, scale), points in lines.items():
                points.sort()
                k = scales.index(scale)
                label = sampler + ("" if method == "none" else f", s={scale:g}")
                ax.plot([p[0] for p in points], [p[1] for p in points], LINESTYLES[k % len(LINESTYLES)],
                        marker=MARKERS[k % len(MARKERS)], ms=4, color=colors[sampler], label=label)
            for scale in scales:
                ref = next((r for r in rows if f"{r['sampler']}:{r['steps']}" == reference and r["method"] == method
                            and r["scale"] == scale and metric in r), None)
                if ref is None:
                    continue
                style = LINESTYLES[scales.index(scale) % len(LINESTYLES)]
                ax.axhline(ref[metric], color="0.4", lw=0.8, ls=style)
                spread = noise.get((method, scale), {}).get(metric)
                if spread:
                    ax.axhspan(ref[metric] - spread, ref[metric] + spread, color="0.5", alpha=0.12)
            ax.set_xscale("log")
            evals = sorted({r["unet_evals_per_image"] for r in rows})
            ax.set_xticks(evals, [str(e) for e in evals])
            ax.minorticks_off()
            ax.grid(True, which="both", alpha=0.3)
            if row_i == 0:
                ax.set_title(f"guidance: {method}")
            if row_i == len(metrics) - 1:
                ax.set_xlabel("network evaluations per image (UNet forwards)")
            if col == 0:
                ax.set_ylabel({"fid": "FID (lower is better)", "label_accuracy": "label accuracy"}[metric])
            if row_i == 0:
                ax.legend(fontsize=7)
    s = report["settings"]
    fig.suptitle(f"preset {s['preset']}: {report['n_generated_per_row']} images per row; grey: {reference}"
                 + (" +- its seed-to-seed difference" if noise else ""), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    report = json.loads(Path(args[0]).read_text())
    print(plot_quality_against_cost(report, args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
