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
    # A multi-arm pilot: [{"name", "method", "scale"}, ...] instead of the preset's comparison, and which arm
    # pairs each item (label and seed) is judged in (model_core.designs).
    arms: list[dict[str, Any]] | None = None
    design: str = "all_pairs"
    reference_arm: str | None = None
    pairs_per_item: int | None = None

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


def load_judge(preset_name: str, judge: JudgeSettings, *, judge_weights: str | None = None,
               real_data: str | None = None):
    """(the :class:`MachineJudge` of a preset, its provenance): the network's file and sha256, the real data.

    Raises ``SettingError`` naming ``judge_weights`` when the preset has no bundled judge and none is given.
    """
    from model_core.data import heldout_data, load_dataset
    from model_core.evaluation.judge import MachineJudge
    from model_core.files import sha256_file
    from model_core.presets import get_preset

    preset = get_preset(preset_name)
    judge.validate()
    net, path = _judge_network(preset, PilotSettings(preset=preset.name, judge=judge, judge_weights=judge_weights))
    real_spec, real_split = heldout_data(preset, real_data)
    real = load_dataset(real_spec, split=real_split, image_size=preset.image_size, channels=preset.in_channels,
                        setting="real_data")
    machine = MachineJudge(net, real.images, k=judge.k, realism_weight=judge.realism_weight)
    info = {"judge_weights": {"path": path, "sha256": sha256_file(path)},
            "real_data": {"spec": real_spec, "split": real_split, "n": len(real)}}
    return machine, info


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
    if settings.arms is not None:
        return _run_arms_pilot(settings, preset, out, device=device, progress=progress)
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


_RESERVED_ARMS = ("same", "none", "pair")


def _resolve_arms(settings: PilotSettings, preset) -> list[dict[str, Any]]:
    from model_core.designs import DESIGNS

    if settings.scales:
        raise SettingError("scales", "{scales} sets the comparison's scales; with {arms} give each arm its scale")
    if settings.design not in DESIGNS:
        raise SettingError("design", f"{{design}} {settings.design!r} is unknown; choose from {', '.join(DESIGNS)}")
    arms: list[dict[str, Any]] = []
    for i, arm in enumerate(settings.arms or []):
        method = str(arm.get("method", "")).lower()
        if method not in preset.methods:
            raise SettingError("arms", f"{{arms}}: arm {i + 1} has method {method!r}; choose from "
                                       f"{', '.join(preset.methods)}")
        scale = 0.0 if method == "none" else preset.scale_for(method, arm.get("scale"))
        if method != "none" and not scale > 0:
            raise SettingError("arms", f"{{arms}}: arm {i + 1} needs a positive scale, got {scale}")
        name = str(arm.get("name") or ("unguided" if method == "none" else f"{method}@{scale:g}")).lower()
        if name in _RESERVED_ARMS or name in {a["name"] for a in arms}:
            raise SettingError("arms", f"{{arms}}: arm name {name!r} is reserved or used twice")
        arms.append({"name": name, "method": method, "scale": float(scale)})
    if len(arms) < 2:
        raise SettingError("arms", "{arms}: give at least two arms")
    if len({(a["method"], a["scale"]) for a in arms}) < len(arms):
        raise SettingError("arms", "{arms}: two arms have the same method and scale")
    names = [a["name"] for a in arms]
    if settings.reference_arm is not None and settings.reference_arm not in names:
        raise SettingError("reference_arm", f"{{reference_arm}} {settings.reference_arm!r} is not one of "
                                            f"{', '.join(names)}")
    return arms


def _run_arms_pilot(settings: PilotSettings, preset, out: str | Path, *, device: str | None,
                    progress: bool) -> dict[str, Any]:
    """The pilot of a multi-arm study: every arm of an item from the same x_T and noise, judged per arm pair."""
    import torch
    from tqdm import tqdm

    from model_core.data import heldout_data, load_dataset
    from model_core.designs import item_pairs
    from model_core.evaluation.judge import MachineJudge, simulated_answers
    from model_core.evaluation.metrics import as_model_images
    from model_core.files import atomic_write, atomic_write_text, sha256_file
    from model_core.images import to_uint8
    from model_core.pipeline import get_pipeline
    from model_core.provenance import code_version, environment
    from model_core.sampling.loop import Trajectory

    if settings.per_class < 1:
        raise SettingError("per_class", f"{{per_class}} must be >= 1, got {settings.per_class}")
    arms = _resolve_arms(settings, preset)
    names = [a["name"] for a in arms]
    labels = settings.labels if settings.labels is not None else list(range(preset.num_classes))
    labels = [preset.resolve_label(y) for y in labels]
    spec = preset.resolve_steps(settings.steps, settings.sampler)
    items = [(y, settings.seed + i) for y in labels for i in range(settings.per_class)]
    try:
        shown = item_pairs(len(items), len(arms), settings.design,
                           reference=names.index(settings.reference_arm) if settings.reference_arm else 0,
                           pairs_per_item=settings.pairs_per_item)
    except ValueError as exc:
        raise SettingError("pairs_per_item", f"{{pairs_per_item}}: {exc}") from None

    net, judge_path = _judge_network(preset, settings)
    real_spec, real_split = heldout_data(preset, settings.real_data)
    real = load_dataset(real_spec, split=real_split, image_size=preset.image_size, channels=preset.in_channels,
                        setting="real_data")
    judge = MachineJudge(net, real.images, k=settings.judge.k, realism_weight=settings.judge.realism_weight)
    pipe = get_pipeline(preset.name, device)
    out = Path(out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    images: dict[str, list[np.ndarray]] = {n: [] for n in names}
    bar = tqdm(total=len(items), desc="pilot items", unit="item", disable=not progress)
    # All arms of a batch of items in one batch of K x B trajectories: shared x_T and noise per (label, seed).
    for i in range(0, len(items), settings.batch_pairs):
        chunk = items[i:i + settings.batch_pairs]
        used = ["diffusion"] + sorted({f"classifier:{a['method']}" for a in arms if a["method"] != "none"})
        blob = json.dumps({"weights": {u: pipe.sources[u] for u in used}, "items": chunk, "arms": arms,
                           "sampler": spec.sampler, "steps": spec.spec}, sort_keys=True)
        path = out / "samples" / f"arms-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.npz"
        if path.is_file():
            with np.load(path) as z:
                got = {n: list(z[f"arm{k}"]) for k, n in enumerate(names)}
        else:
            trs = [Trajectory(int(y), int(seed), a["method"], a["scale"]) for a in arms for y, seed in chunk]
            flat = list(to_uint8(pipe.sample_trajectories(trs, spec.spec, spec.sampler)))
            got = {n: flat[k * len(chunk):(k + 1) * len(chunk)] for k, n in enumerate(names)}
            atomic_write(path, lambda p, g=got: np.savez(p, **{f"arm{k}": np.stack(g[n]) for k, n in enumerate(names)}),
                         suffix=".npz")
        for n in names:
            images[n].extend(got[n])
        bar.update(len(chunk))
    bar.close()

    y = torch.tensor([lab for lab, _ in items])
    scores = {n: judge.score(as_model_images(np.stack(images[n])), y) for n in names}
    for n in names:
        scores[n]["hit"] = scores[n]["pred"] == y.numpy()
    records = []
    for j, (lab, seed) in enumerate(items):
        for x, z in shown[j]:
            a, b = names[x], names[z]
            key = f"{preset.name}-{lab}-{seed}-{a}-{b}"
            answers = simulated_answers(scores[a]["u"][j:j + 1], scores[b]["u"][j:j + 1], settings.judge, [key])[0]
            records.append({
                "pair_id": key, "item": j, "label": lab, "class_name": preset.class_names[lab], "seed": seed,
                "arms": [a, b],
                "scores": {m: {k: float(scores[m][k][j]) for k in ("log_p", "realism", "u")} for m in (a, b)},
                "answers": [{"answer": ans, "side_a": side} for ans, side in answers]})
    flat = [ans["answer"] for rec in records for ans in rec["answers"]]
    summary = {
        "n_items": len(items), "n_pairs": len(records),
        "per_arm": {n: {"label_accuracy": float(np.mean(scores[n]["hit"])),
                        "mean_log_p": float(np.mean(scores[n]["log_p"])),
                        "inside_real_manifold": float(np.mean(scores[n]["realism"] >= 1.0)),
                        "median_realism": float(np.median(scores[n]["realism"])),
                        "mean_u": float(np.mean(scores[n]["u"]))} for n in names},
        "same_share": flat.count("same") / max(len(flat), 1),
    }
    result = {
        "kind": "machine-pilot", "schema": 1, "preset": preset.name, "arms": arms, "design": settings.design,
        "methods": names, "scales": {a["name"]: a["scale"] for a in arms}, "steps": spec.spec,
        "sampler": spec.sampler, "settings": settings.to_dict(),
        "judge_weights": {"path": judge_path, "sha256": sha256_file(judge_path)},
        "real_data": {"spec": real_spec, "split": real_split, "n": len(real)},
        "models": pipe.provenance(), "code_version": code_version(), "environment": environment(),
        "summary": summary, "pairs": records,
    }
    atomic_write_text(out / "pilot.json", json.dumps(result, indent=1, allow_nan=False))
    result["images"] = images
    result["items"] = items
    return result
