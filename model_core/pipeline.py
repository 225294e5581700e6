"""A loaded preset: its UNet and classifiers in memory, ready to sample.

``get_pipeline`` caches one pipeline per (preset, device) in the process, so a
worker loads each preset once and keeps it.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch

from model_core import settings
from model_core.diffusion import GaussianDiffusion, create_diffusion
from model_core.images import to_uint8
from model_core.presets import Preset, get_preset
from model_core.provenance import environment, file_sha256
from model_core.sampling.loop import StepCallback, Trajectory, sample
from model_core.steps import parse_steps
from model_core.models.adm import classifier_from_config, unet_from_config

def default_device() -> str:
    return settings.device() or ("cuda" if torch.cuda.is_available() else "cpu")


def _build(builder: Callable[[dict], torch.nn.Module], cfg: dict, weights, device: str) -> tuple[torch.nn.Module, str]:
    path = weights.resolve()
    if path is None:
        # Seeded random initialisation, without disturbing the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(weights.init_seed or 0))
            model = builder(cfg)
            # ADM zero-initialises output layers; a random test model with a
            # constant-zero output would make every sampling test vacuous.
            for p in model.parameters():
                if not p.detach().any():
                    p.data.normal_(0.0, 0.02)
        source = f"random-init:seed={int(weights.init_seed or 0)}"
    else:
        from model_core.checkpoints import load_weights

        model = builder(cfg)
        load_weights(model, path, what=weights.role, env_var=weights.env)
        source = f"sha256:{file_sha256(path)}"
    if device.startswith("cuda") and (cfg.get("use_fp16") or cfg.get("classifier_use_fp16")):
        model.convert_to_fp16()
    model.to(device).eval()
    model.requires_grad_(False)
    return model, source


class Pipeline:
    def __init__(self, preset: Preset, device: str | None = None, max_batch: int | None = None):
        self.preset = preset
        self.device = device or default_device()
        self.max_batch = int(max_batch or settings.max_batch())
        problems = preset.missing_checkpoints()
        if problems:
            raise FileNotFoundError("; ".join(problems))
        weights = preset.weights()
        self.unet, diff_src = _build(unet_from_config, preset.diffusion["model"], weights["diffusion"], self.device)
        self.classifiers: dict[str, torch.nn.Module] = {}
        self.sources = {"diffusion": diff_src}
        for method, cfg in preset.classifiers.items():
            model, src = _build(classifier_from_config, cfg["model"], weights[f"classifier:{method}"], self.device)
            self.classifiers[method] = model
            self.sources[f"classifier:{method}"] = src
        self.class_cond = bool(preset.diffusion["model"].get("class_cond", True))
        self.shape = (preset.in_channels, preset.image_size, preset.image_size)
        self._lock = threading.Lock()

    @lru_cache(maxsize=16)
    def diffusion(self, steps: str) -> GaussianDiffusion:
        return create_diffusion(self.preset.diffusion["process"], steps)

    def provenance(self) -> dict[str, Any]:
        return {"preset": self.preset.name, "weights": dict(self.sources), **environment()}

    # -- sampling ------------------------------------------------------------
    def sample_trajectories(self, trajectories: list[Trajectory], steps: str | int | None = None,
                            sampler: str | None = None, callback: StepCallback | None = None) -> torch.Tensor:
        """Sample any mix of labels, seeds and methods sharing steps and sampler.

        Batches larger than ``max_batch`` run in chunks; the callback sees one
        running step count over all chunks.
        """
        spec = parse_steps(self.preset.default_steps if steps is None else steps,
                           sampler or (None if steps is not None else self.preset.default_sampler))
        for tr in trajectories:
            self.preset.resolve_label(int(tr.label))
            if tr.method not in self.preset.methods:
                raise ValueError(f"guidance {tr.method!r} is not a method of preset {self.preset.name!r}")
        diffusion = self.diffusion(spec.spec)
        chunks = [trajectories[i:i + self.max_batch] for i in range(0, len(trajectories), self.max_batch)]
        outs = []
        for c, chunk in enumerate(chunks):
            cb = None
            if callback is not None:
                def cb(step, total, x, x0, _c=c):
                    callback(_c * total + step, len(chunks) * total, x, x0)
            with self._lock:
                outs.append(sample(diffusion, self.unet, self.classifiers, chunk, self.shape, sampler=spec.sampler,
                                   clip_denoised=self.preset.clip_denoised, device=self.device,
                                   class_cond=self.class_cond, callback=cb))
        return torch.cat(outs)

    def sample(self, labels: list[int], seeds: list[int], method: str, scale: float | None = None,
               steps: str | int | None = None, sampler: str | None = None,
               callback: StepCallback | None = None) -> list[np.ndarray]:
        if len(labels) != len(seeds):
            raise ValueError(f"{len(labels)} labels but {len(seeds)} seeds")
        s = self.preset.scale_for(method, scale)
        trs = [Trajectory(int(y), int(seed), method, s) for y, seed in zip(labels, seeds)]
        return list(to_uint8(self.sample_trajectories(trs, steps, sampler, callback)))

    def sample_pair(self, labels: list[int], seeds: list[int], scales: dict[str, float] | None = None,
                    steps: str | int | None = None, sampler: str | None = None,
                    callback: StepCallback | None = None) -> dict[str, list[np.ndarray]]:
        """The preset's comparison (robust/vanilla) seed-matched: one batch of 2B, shared x_T and noise."""
        if len(labels) != len(seeds):
            raise ValueError(f"{len(labels)} labels but {len(seeds)} seeds")
        scales = {**self.preset.comparison_scales(), **(scales or {})}
        methods = self.preset.pair_methods
        trs = [Trajectory(int(y), int(seed), m, self.preset.scale_for(m, scales.get(m)))
               for m in methods for y, seed in zip(labels, seeds)]
        images = list(to_uint8(self.sample_trajectories(trs, steps, sampler, callback)))
        n = len(labels)
        return {m: images[i * n:(i + 1) * n] for i, m in enumerate(methods)}


_pipelines: dict[tuple[str, str], Pipeline] = {}
_pipelines_lock = threading.Lock()


def get_pipeline(preset_name: str | None = None, device: str | None = None) -> Pipeline:
    preset = get_preset(preset_name)
    device = device or default_device()
    key = (preset.name, device)
    with _pipelines_lock:
        if key not in _pipelines:
            _pipelines[key] = Pipeline(preset, device)
        return _pipelines[key]
