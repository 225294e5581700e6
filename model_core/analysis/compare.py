"""Figure 2: seed-matched comparison sheets, every arm side by side for each label and seed.

One row per arm (unguided, the comparison's baseline, its first arm, then any
other, unless the request lists arms), one column per (label, seed), the
label and seed written under each column. Every image of a column comes from
the same seed, so the same x_T and per-step noise (``model_core.sampling.loop``):
the arms differ only by their guidance.
"""
from __future__ import annotations

import torch

from model_core.analysis import render
from model_core.analysis.common import Progress, UploadFinder, class_name, provenance
from model_core.analysis.sidecar import Output
from model_core.files import sha256_bytes
from model_core.images import encode_png, to_uint8
from model_core.sampling.loop import Trajectory


def run(settings: dict, *, find_upload: UploadFinder | None = None, device: str | None = None,
        progress: Progress | None = None) -> Output:
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset

    preset = get_preset(settings["preset"])
    pipe = get_pipeline(preset.name, device)
    arms, labels, seeds = settings["arms"], settings["labels"], settings["seeds"]
    trs = [Trajectory(int(y), int(seed), arm["method"], float(arm["scale"]))
           for arm in arms for y, seed in zip(labels, seeds)]

    def cb(step, total, x, x0):
        if progress is not None:
            progress(step + 1, total)

    with torch.no_grad():
        images = to_uint8(pipe.sample_trajectories(trs, settings["steps"], settings["sampler"], callback=cb))
    n = len(labels)
    rows = [list(images[a * n:(a + 1) * n]) for a in range(len(arms))]
    row_labels = [arm["name"] if arm["method"] == "none" else f"{arm['name']}\n(s = {arm['scale']:g})"
                  for arm in arms]
    footers = [f"{y} ({class_name(preset, y)})\nseed {s}" for y, s in zip(labels, seeds)]
    g = render.Grid(rows, title=f"Seed-matched samples; preset {preset.name}, {settings['steps']} steps "
                                f"({settings['sampler']})",
                    row_labels=row_labels, col_footers=footers,
                    notes=["Each column shares its seed: the same x_T and noise for every arm."])
    files = {"compare.png": encode_png(render.render(g))}
    summary = {"samples": [{"arm": arm["name"], "label": y, "seed": s,
                            "sha256": sha256_bytes(rows[a][j].tobytes())}
                           for a, arm in enumerate(arms) for j, (y, s) in enumerate(zip(labels, seeds))]}
    return Output("compare", settings, files, summary, provenance(pipe))
