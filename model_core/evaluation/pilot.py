"""A machine-rater pilot of a pairwise study: sample seed-matched pairs, judge them, simulate raters.

Every (label, seed) gives one pair: the preset's comparison arms (robust and
vanilla by default) sampled from the same x_T and noise, in one batch. The
:class:`~model_core.evaluation.judge.MachineJudge` scores both images and
simulated raters answer around its preference. The result is plain data
(per pair: label, seed, each arm's scores, each rater's answer and the side
arm A was shown on), which ``rguide pilot`` turns into the survey's votes and
statistics. Nothing here knows about the survey's tables: machine answers
never enter the human statistics.

Samples are cached per batch under ``OUT/samples`` by a key of everything
that shapes them, so a stopped pilot continues where it was and a change of
judge settings re-judges without re-sampling.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_core.errors import SettingError
from model_core.evaluation.judge import JudgeSettings


@dataclass
class PilotSettings:
    preset: str
    per_class: int = 10
    labels: list[int] | None = None          # default: every class of the preset
    seed: int = 0                            # pair i of a class uses seed + i
    steps: str | None = None
    sampler: str | None = None
    scales: dict[str, float] = field(default_factory=dict)  # method -> scale; default: the comparison's
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    judge_weights: str | None = None         # a network with features()/logits(); default: preset's features
    real_data: str | None = None             # default: the preset's held-out data
    batch_pairs: int = 16

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["judge"] = self.judge.to_dict()
        return d


def _judge_network(preset, settings: PilotSettings):
    from model_core.evaluation.quality import _resolve_path
    from model_core.models.feature_net import load_feature_net

    path = settings.judge_weights or _resolve_path(preset.judge_network())
    if path is None:
        raise SettingError("judge_weights", f"preset {preset.name!r} has no bundled judge network: give "
                                            "{judge_weights} (a feature-network file with class logits)")
    try:
        return load_feature_net(path), str(path)
    except FileNotFoundError as exc:
        raise SettingError("judge_weights", f"{{judge_weights}}: {exc}") from None


def run_pilot(settings: PilotSettings, out: str | Path, *, device: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Sample, judge and simulate; returns the pilot as plain data (also written to ``OUT/pilot.json``)."""
    import torch
    from tqdm import tqdm

    from model_core.data import heldout_data, load_dataset
    from model_core.evaluation.judge import MachineJudge, simulated_answers
    from model_core.evaluation.metrics import as_model_images
    from model_core.files import atomic_write, atomic_write_text, sha256_file
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset
    from model_core.provenance import code_version, environment

    preset = get_preset(settings.preset)
    settings.judge.validate()
    if settings.per_class < 1:
        raise SettingError("per_class", f"{{per_class}} must be >= 1, got {settings.per_class}")
    labels = settings.labels if settings.labels is not None else list(range(preset.num_classes))
    labels = [preset.resolve_label(y) for y in labels]
    methods = preset.pair_methods
    unknown = sorted(set(settings.scales) - set(methods))
    if unknown:
        raise SettingError("scales", f"{{scales}} names {', '.join(unknown)}, not arms of the comparison "
                                     f"({', '.join(methods)})")
    scales = {**preset.comparison_scales(), **settings.scales}
    spec = preset.resolve_steps(settings.steps, settings.sampler)

    net, judge_path = _judge_network(preset, settings)
    real_spec, real_split = heldout_data(preset, settings.real_data)
    real = load_dataset(real_spec, split=real_split, image_size=preset.image_size, channels=preset.in_channels,
                        setting="real_data")
    judge = MachineJudge(net, real.images, k=settings.judge.k, realism_weight=settings.judge.realism_weight)

    pipe = get_pipeline(preset.name, device)
    pairs = [(y, settings.seed + i) for y in labels for i in range(settings.per_class)]
    out = Path(out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    images: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    bar = tqdm(total=len(pairs), desc="pilot pairs", unit="pair", disable=not progress)
    for i in range(0, len(pairs), settings.batch_pairs):
        chunk = pairs[i:i + settings.batch_pairs]
        key = _batch_key(pipe, chunk, methods, scales, spec)
        path = out / "samples" / f"{key}.npz"
        if path.is_file():
            with np.load(path) as z:
                got = {m: list(z[m]) for m in methods}
        else:
            got = pipe.sample_pair([y for y, _ in chunk], [s for _, s in chunk], scales=scales,
                                   steps=spec.spec, sampler=spec.sampler)
            atomic_write(path, lambda p, g=got: np.savez(p, **{m: np.stack(g[m]) for m in methods}), suffix=".npz")
        for m in methods:
            images[m].extend(got[m])
        bar.update(len(chunk))
    bar.close()

    y = torch.tensor([lab for lab, _ in pairs])
    scores = {m: judge.score(as_model_images(np.stack(images[m])), y) for m in methods}
    for m in methods:
        scores[m]["hit"] = scores[m]["pred"] == y.numpy()
    keys = [f"{preset.name}-{lab}-{seed}" for lab, seed in pairs]
    answers = simulated_answers(scores[methods[0]]["u"], scores[methods[1]]["u"], settings.judge, keys)
    records = []
    for j, ((lab, seed), key) in enumerate(zip(pairs, keys)):
        records.append({
            "pair_id": key, "label": lab, "class_name": preset.class_names[lab], "seed": seed,
            "scores": {m: {k: float(scores[m][k][j]) for k in ("log_p", "realism", "u")} for m in methods},
            "answers": [{"answer": a, "side_a": s} for a, s in answers[j]],
        })
    result = {
        "kind": "machine-pilot", "schema": 1, "preset": preset.name, "methods": list(methods),
        "scales": {m: float(scales[m]) for m in methods}, "steps": spec.spec, "sampler": spec.sampler,
        "settings": settings.to_dict(), "judge_weights": {"path": judge_path, "sha256": sha256_file(judge_path)},
        "real_data": {"spec": real_spec, "split": real_split, "n": len(real)},
        "models": pipe.provenance(), "code_version": code_version(), "environment": environment(),
        "summary": _summary(scores, methods, answers), "pairs": records,
    }
    atomic_write_text(out / "pilot.json", json.dumps(result, indent=1, allow_nan=False))
    result["images"] = images
    return result


def _summary(scores: dict, methods: tuple[str, ...], answers: list) -> dict:
    a, b = methods
    ua, ub = scores[a]["u"], scores[b]["u"]
    flat = [ans for per in answers for ans, _ in per]
    n = max(len(flat), 1)
    return {
        "n_pairs": int(len(ua)),
        "judge_prefers": {a: float(np.mean(ua > ub)), b: float(np.mean(ub > ua)), "tie": float(np.mean(ua == ub))},
        "mean_u_difference": float(np.mean(ua - ub)),
        "per_arm": {m: {"label_accuracy": float(np.mean(scores[m]["hit"])),
                        "mean_log_p": float(np.mean(scores[m]["log_p"])),
                        "inside_real_manifold": float(np.mean(scores[m]["realism"] >= 1.0)),
                        "median_realism": float(np.median(scores[m]["realism"]))} for m in methods},
        "answer_shares": {a: flat.count("a") / n, b: flat.count("b") / n, "same": flat.count("same") / n},
    }


def _batch_key(pipe, chunk, methods, scales, spec) -> str:
    used = ["diffusion"] + [f"classifier:{m}" for m in methods if m != "none"]
    blob = json.dumps({"weights": {u: pipe.sources[u] for u in used}, "pairs": chunk, "methods": list(methods),
                       "scales": {m: float(scales[m]) for m in methods}, "sampler": spec.sampler,
                       "steps": spec.spec}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
