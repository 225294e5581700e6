"""Figure 4: class maximisation with each classifier, and whether another network sees the target class.

Each image x is moved toward a target class by targeted PGD at t = 0 under an
L2 ball (``model_core.robustness.attacks.pgd_targeted``): the paper's 7 steps
and radius 100 for 128x128x3 images, scaled by sqrt(d / 49152) for images of
d values (12.63 for the demo's 28x28x1: the same radius per pixel), step
2.5 * eps / steps (Appendix E), pixels kept in [-1, 1].

A classifier that is being maximised always ends up "seeing" its target; that
says nothing. What says whether its gradients carry the class is how often a
network that was **not** maximised, the judge, reads the result as the
target: the demo's bundled digit CNN (``model_core/models/feature_net.py``),
or a classifier file the user gives for other presets. Rates come with Wilson
95% intervals; the paired difference between classifiers (same images, same
targets) with a t interval.
"""
from __future__ import annotations

import numpy as np
import torch

from model_core.analysis import intervals, render
from model_core.analysis.common import (Inputs, Progress, UploadFinder, class_name, load_inputs, load_judge,
                                        provenance, ticker)
from model_core.analysis.sidecar import Output
from model_core.images import encode_png
from model_core.robustness.attacks import AttackResult, pgd_targeted

TARGET_STREAM = 2
BATCH = 250


def random_targets(labels: list[int | None], num_classes: int, seed: int) -> list[int]:
    """Image i with label y gets y + 1 + r_i mod C, r_i uniform in 0..C-2 (never its own class); unlabelled: r_i."""
    out = []
    for i, y in enumerate(labels):
        rng = np.random.default_rng([int(seed), i, TARGET_STREAM])
        if y is None:
            out.append(int(rng.integers(0, num_classes)))
        else:
            out.append(int((y + 1 + rng.integers(0, num_classes - 1)) % num_classes))
    return out


def maximise(classifier: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, *, eps: float, steps: int,
             step_size: float, clip: tuple[float, float] | None = (-1.0, 1.0)) -> AttackResult:
    """Targeted L2 PGD at t = 0 (the classifier sees timestep 0, the clean-image end of its range)."""
    t = torch.zeros(len(x), dtype=torch.long, device=x.device)
    return pgd_targeted(classifier, x, t, targets, norm="l2", eps=eps, steps=steps, step_size=step_size, clip=clip)


@torch.no_grad()
def target_probs(classifier: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    t = torch.zeros(len(x), dtype=torch.long, device=x.device)
    return torch.softmax(classifier(x, t).float(), -1).gather(1, targets[:, None])[:, 0]


def picture(preset, settings: dict, inputs: Inputs, targets: list[int], results: dict[str, torch.Tensor],
            judge_probs: dict[str, torch.Tensor] | None, show: int) -> np.ndarray:
    names = list(results)
    rows, labels, captions = [], [], []
    for i in range(show):
        row = [render.signed_to_uint8(inputs.x0[i].numpy())]
        caps = [_reading(preset, judge_probs["start"][i]) if judge_probs else ""]
        for name in names:
            row.append(render.signed_to_uint8(results[name][i].numpy()))
            caps.append(_reading(preset, judge_probs[name][i]) if judge_probs else "")
        rows.append(row)
        captions.append(caps)
        y = inputs.labels[i]
        labels.append(f"{'?' if y is None else y} -> {targets[i]}\n({class_name(preset, y)} ->\n"
                      f"{class_name(preset, targets[i])})")
    notes = [f"Targeted L2 PGD at t = 0: eps {settings['eps']:.4g}, {settings['attack_steps']} steps of "
             f"{settings['step_size']:.4g}; pixels kept in [-1, 1]."]
    if judge_probs:
        notes.append("Under each image: the judge's reading (class, probability); the judge was never maximised.")
    g = render.Grid(rows, title=f"Class maximisation with each classifier; preset {preset.name}",
                    col_headers=["start"] + names, row_labels=labels, captions=captions, notes=notes)
    return render.render(g)


def _reading(preset, probs: torch.Tensor) -> str:
    c = int(probs.argmax())
    return f"{c} ({float(probs[c]):.2f})"


def run(settings: dict, *, find_upload: UploadFinder | None = None, device: str | None = None,
        progress: Progress | None = None) -> Output:
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset

    preset = get_preset(settings["preset"])
    pipe = get_pipeline(preset.name, device)
    dev = pipe.device
    inputs = load_inputs(preset, settings["inputs"], find_upload)
    n = len(inputs.x0)
    targets = settings["targets"]
    if targets is None:
        targets = random_targets(inputs.labels, preset.num_classes, settings["seed"])
    elif len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} images")
    tgt = torch.tensor(targets, dtype=torch.long)
    judge = load_judge(settings["judge"], dev)
    names = settings["classifiers"]
    tick = ticker(progress, len(names) * -(-n // BATCH))
    results: dict[str, torch.Tensor] = {}
    own: dict[str, dict[str, torch.Tensor]] = {}
    for name in names:
        model = pipe.classifiers[name]
        xs, before, after, hit = [], [], [], []
        for i in range(0, n, BATCH):
            x = inputs.x0[i:i + BATCH].to(dev)
            t = tgt[i:i + BATCH].to(dev)
            res = maximise(model, x, t, eps=settings["eps"], steps=settings["attack_steps"],
                           step_size=settings["step_size"], clip=tuple(settings["clip"]))
            xs.append(res.x_adv.cpu())
            before.append(target_probs(model, x, t).cpu())
            after.append(target_probs(model, res.x_adv, t).cpu())
            hit.append(res.fooled.cpu())
            tick(1)
        results[name] = torch.cat(xs)
        own[name] = {"before": torch.cat(before), "after": torch.cat(after), "hit": torch.cat(hit)}

    judge_probs = None
    if judge is not None:
        judge_probs = {"start": judge.probs(inputs.x0.to(dev)).cpu()}
        for name in names:
            judge_probs[name] = judge.probs(results[name].to(dev)).cpu()
    summary = _summary(inputs, tgt, results, own, judge_probs, judge)
    show = min(settings["show"], n)
    files = {"maximize.png": encode_png(picture(preset, settings, inputs, targets, results, judge_probs, show)),
             "maximize.md": table(summary).encode()}
    extra = {"images": inputs.refs, "targets": targets}
    prov = provenance(pipe, judge=judge.source if judge else None)
    return Output("maximize", settings, files, summary, prov,
                  inputs=[{**r, "file": f"inputs/{r['sha256']}.png"} for r in settings["inputs"].get("uploads", [])],
                  extra=extra)


def _summary(inputs: Inputs, tgt: torch.Tensor, results, own, judge_probs, judge) -> dict:
    n = len(tgt)
    per = {}
    hits = {}
    for name, x_adv in results.items():
        delta = (x_adv - inputs.x0).flatten(1).norm(dim=1).numpy()
        entry = {"classifier_reads_target": intervals.proportion_interval(int(own[name]["hit"].sum()), n),
                 "classifier_target_prob_before": intervals.mean_interval(own[name]["before"].numpy()),
                 "classifier_target_prob_after": intervals.mean_interval(own[name]["after"].numpy()),
                 "l2_change": intervals.mean_interval(delta)}
        if judge_probs is not None:
            jp = judge_probs[name]
            hit = (jp.argmax(-1) == tgt)
            hits[name] = hit.double().numpy()
            entry["judge_reads_target"] = intervals.proportion_interval(int(hit.sum()), n)
            entry["judge_target_prob"] = intervals.mean_interval(jp.gather(1, tgt[:, None])[:, 0].numpy())
        per[name] = entry
    out = {"n_images": n, "classifiers": per}
    if judge_probs is not None:
        start = judge_probs["start"]
        out["judge"] = judge.description
        out["judge_reads_target_before"] = intervals.proportion_interval(int((start.argmax(-1) == tgt).sum()), n)
        known = [i for i, y in enumerate(inputs.labels) if y is not None]
        if known:
            ys = torch.tensor([inputs.labels[i] for i in known])
            out["judge_reads_label_before"] = intervals.proportion_interval(
                int((start[known].argmax(-1) == ys).sum()), len(known))
        names = list(results)
        if len(names) > 1:
            base = names[0]
            out["differences"] = {f"{m} - {base}": {"judge_reads_target": intervals.paired_difference(hits[m],
                                                                                                   hits[base])}
                                  for m in names[1:]}
    return out


def table(summary: dict) -> str:
    lines = ["| classifier | judge reads target | judge p(target) | classifier reads target | L2 change |",
             "|---|---:|---:|---:|---:|"]
    for name, e in summary["classifiers"].items():
        lines.append(f"| {name} | {intervals.fmt_mean(e.get('judge_reads_target', {}))} | "
                     f"{intervals.fmt_mean(e.get('judge_target_prob', {}))} | "
                     f"{intervals.fmt_mean(e['classifier_reads_target'])} | {intervals.fmt_mean(e['l2_change'], 2)} |")
    for name, e in summary.get("differences", {}).items():
        lines.append(f"| {name} (paired) | {intervals.fmt_mean(e['judge_reads_target'])} | | | |")
    if "judge_reads_target_before" in summary:
        lines.append(f"| (start images) | {intervals.fmt_mean(summary['judge_reads_target_before'])} | | | |")
    return "\n".join(lines) + "\n"
