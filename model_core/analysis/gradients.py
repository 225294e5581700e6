"""Figure 3: input gradients of log p(y | x_t, t) per classifier and timestep, and how aligned they are.

For each image x_0 with label y and each timestep t, x_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps is formed **once** and handed to every classifier, so
two classifiers' maps differ only by the classifiers. The map is
grad_{x_t} log p_phi(y | x_t, t) (``model_core.sampling.guidance.log_prob_grad``,
the same gradient guidance uses), min-max normalised per map for the picture.

Two numbers summarise how perceptually aligned a gradient g is (defined in
``docs/analysis.md``), per image, then averaged over the inputs per classifier
and timestep bucket with 95% t intervals (and the paired difference between
classifiers, which shares images and noise):

* ``cosine``: cos(g, x_0 - x_t), the cosine between the gradient and the
  direction from the noisy input back to the clean image;
* ``object_share``: the share of the gradient's energy sum(g^2) that falls on
  the object, the pixels whose clean value (mean over channels) is above
  ``threshold``; ``object_area`` is the share of pixels that are object, the
  value a gradient spread evenly would get.

Noise: image i's draws come from ``common.generator(seed, i, stream)``:
stream 0 gives one eps per grid timestep, in order; stream 1 gives, per
bucket in order, t uniform in the bucket and then eps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model_core.analysis import intervals, render
from model_core.analysis.common import (Inputs, Progress, UploadFinder, class_name, generator, load_inputs,
                                        provenance, ticker)
from model_core.analysis.sidecar import Output
from model_core.diffusion.buckets import bucket_edges, bucket_name
from model_core.images import encode_png
from model_core.sampling.guidance import log_prob_grad

GRID_STREAM, STATS_STREAM = 0, 1
BATCH = 250


@dataclass
class GradientMaps:
    timesteps: list[int]
    x_t: torch.Tensor                  # (N, K, C, H, W): the one input every classifier saw
    grads: dict[str, torch.Tensor]     # classifier -> (N, K, C, H, W)


def noisy_inputs(diffusion, x0: torch.Tensor, timesteps: list[int], seed: int, first_index: int = 0,
                 stream: int = GRID_STREAM) -> torch.Tensor:
    """x_t for every image and timestep, (N, K, C, H, W); image i's noise from ``generator(seed, first_index + i)``."""
    out = torch.empty((x0.shape[0], len(timesteps)) + tuple(x0.shape[1:]), dtype=x0.dtype)
    for i in range(x0.shape[0]):
        g = generator(seed, first_index + i, stream)
        for k, t in enumerate(timesteps):
            eps = torch.randn(x0.shape[1:], generator=g)
            out[i, k] = diffusion.q_sample(x0[i:i + 1], torch.tensor([t]), eps[None])[0]
    return out


def gradient_maps(classifiers: dict[str, torch.nn.Module], diffusion, x0: torch.Tensor, labels: torch.Tensor,
                  timesteps: list[int], seed: int, device: str = "cpu") -> GradientMaps:
    x_t = noisy_inputs(diffusion, x0, timesteps, seed)
    grads = {name: torch.empty_like(x_t) for name in classifiers}
    y = labels.to(device)
    for k, t in enumerate(timesteps):
        xs = x_t[:, k].to(device)
        ts = torch.full((len(xs),), t, dtype=torch.long, device=device)
        for name, model in classifiers.items():
            grads[name][:, k] = log_prob_grad(model, xs, ts, y).cpu()
    return GradientMaps(list(timesteps), x_t, grads)


def alignment(g: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, threshold: float) -> dict[str, torch.Tensor]:
    """Per image: cosine(g, x_0 - x_t), the share of sum(g^2) on object pixels, and the object's pixel share.

    A zero gradient (or x_t = x_0) has no direction: its cosine is NaN and left out of averages.
    """
    gf = g.flatten(1).double()
    d = (x0 - x_t).flatten(1).double()
    norms = gf.norm(dim=1) * d.norm(dim=1)
    cos = torch.where(norms > 0, (gf * d).sum(1) / norms.clamp_min(1e-300), torch.full_like(norms, float("nan")))
    mask = (x0.mean(1, keepdim=True) > threshold).expand_as(g)
    energy = g.double() ** 2
    total = energy.flatten(1).sum(1)
    share = torch.where(total > 0, (energy * mask).flatten(1).sum(1) / total.clamp_min(1e-300),
                        torch.full_like(total, float("nan")))
    area = mask[:, :1].flatten(1).double().mean(1)
    return {"cosine": cos, "object_share": share, "object_area": area}


def bucket_alignment(classifiers: dict[str, torch.nn.Module], diffusion, inputs: Inputs, buckets: int,
                     threshold: float, seed: int, device: str, tick) -> dict:
    """Per bucket: each image at a t drawn in the bucket, one x_t for all classifiers; means with intervals."""
    x0 = inputs.x0
    y = torch.tensor(inputs.labels, dtype=torch.long)
    n = len(x0)
    edges = bucket_edges(diffusion.num_timesteps, buckets)
    gens = [generator(seed, i, STATS_STREAM) for i in range(n)]
    out = {}
    names = list(classifiers)
    for lo, hi in edges:
        t_all = torch.stack([torch.randint(lo, hi, (1,), generator=g)[0] for g in gens])
        eps = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
        x_t = diffusion.q_sample(x0, t_all, eps)
        per: dict[str, dict[str, list]] = {m: {"cosine": [], "object_share": []} for m in names}
        area = []
        for i in range(0, n, BATCH):
            xs, ts, ys = x_t[i:i + BATCH].to(device), t_all[i:i + BATCH].to(device), y[i:i + BATCH].to(device)
            for name, model in classifiers.items():
                a = alignment(log_prob_grad(model, xs, ts, ys).cpu(), x0[i:i + BATCH], x_t[i:i + BATCH], threshold)
                per[name]["cosine"].append(a["cosine"])
                per[name]["object_share"].append(a["object_share"])
            area.append(a["object_area"])
            tick(1)
        values = {m: {k: torch.cat(v).numpy() for k, v in d.items()} for m, d in per.items()}
        entry = {"n": n, "t_range": [lo, hi - 1],
                 "object_area": intervals.mean_interval(torch.cat(area).numpy()),
                 "classifiers": {m: {k: intervals.mean_interval(v) for k, v in d.items()}
                                 for m, d in values.items()}}
        if len(names) > 1:
            base = names[0]
            entry["differences"] = {f"{m} - {base}": {k: intervals.paired_difference(values[m][k], values[base][k])
                                                      for k in ("cosine", "object_share")} for m in names[1:]}
        out[bucket_name(lo, hi)] = entry
    return out


def picture(preset, settings: dict, inputs: Inputs, maps: GradientMaps) -> np.ndarray:
    rows, labels = [], []
    names = list(maps.grads)
    for i in range(maps.x_t.shape[0]):
        clean = render.signed_to_uint8(inputs.x0[i].numpy())
        rows.append([clean] + [render.signed_to_uint8(maps.x_t[i, k].numpy()) for k in range(len(maps.timesteps))])
        label = inputs.labels[i]
        labels.append(f"{label} ({class_name(preset, label)})\nx_t")
        for name in names:
            rows.append([None] + [render.unit_to_uint8(render.minmax(maps.grads[name][i, k].numpy()))
                                  for k in range(len(maps.timesteps))])
            labels.append(f"grad {name}")
    g = render.Grid(rows, title=f"Input gradients of log p(y | x_t, t), each map min-max normalised; preset "
                                f"{preset.name}",
                    col_headers=["x_0"] + [f"t = {t}" for t in maps.timesteps], row_labels=labels,
                    notes=[f"The same x_t (row 'x_t') goes to every classifier; noise seed {settings['seed']}."])
    return render.render(g)


def table(summary: dict) -> str:
    """Markdown: one row per bucket and classifier, then the paired differences."""
    lines = ["| t bucket | classifier | cosine(grad, x_0 - x_t) | energy share on object | object area |",
             "|---|---|---:|---:|---:|"]
    for bucket, entry in summary["buckets"].items():
        for name, vals in entry["classifiers"].items():
            lines.append(f"| {bucket} | {name} | {intervals.fmt_mean(vals['cosine'])} | "
                         f"{intervals.fmt_mean(vals['object_share'])} | {intervals.fmt_mean(entry['object_area'])} |")
        for name, vals in entry.get("differences", {}).items():
            lines.append(f"| {bucket} | {name} (paired) | {intervals.fmt_mean(vals['cosine'])} | "
                         f"{intervals.fmt_mean(vals['object_share'])} | |")
    return "\n".join(lines) + "\n"


def run(settings: dict, *, find_upload: UploadFinder | None = None, device: str | None = None,
        progress: Progress | None = None) -> Output:
    from model_core.diffusion import create_diffusion
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset
    from model_core.training.recipes import classifier_process

    preset = get_preset(settings["preset"])
    pipe = get_pipeline(preset.name, device)
    classifiers = {name: pipe.classifiers[name] for name in settings["classifiers"]}
    diffusion = create_diffusion(classifier_process(preset))
    inputs = load_inputs(preset, settings["inputs"], find_upload)
    if any(label is None for label in inputs.labels):
        raise ValueError("every image needs its label: the gradient is of log p(label | x_t, t)")
    n = len(inputs.x0)
    batches = -(-n // BATCH)
    tick = ticker(progress, 1 + settings["buckets"] * batches)
    show = min(settings["show"], n)
    y = torch.tensor(inputs.labels, dtype=torch.long)
    maps = gradient_maps(classifiers, diffusion, inputs.x0[:show], y[:show], settings["timesteps"], settings["seed"],
                         pipe.device)
    tick(1)
    buckets = bucket_alignment(classifiers, diffusion, inputs, settings["buckets"], settings["threshold"],
                               settings["seed"], pipe.device, tick)
    summary = {"n_images": n, "threshold": settings["threshold"], "buckets": buckets}
    files = {"gradients.png": encode_png(picture(preset, settings, Inputs(inputs.x0[:show], inputs.labels[:show],
                                                                          inputs.refs[:show]), maps)),
             "gradients.md": table(summary).encode()}
    return Output("gradients", settings, files, summary, provenance(pipe),
                  inputs=[{**ref, "file": f"inputs/{ref['sha256']}.png"}
                          for ref in settings["inputs"].get("uploads", [])],
                  extra={"images": inputs.refs})
