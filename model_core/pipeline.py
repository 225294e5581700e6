"""A loaded preset: its UNet and guidance providers in memory, ready to sample.

Each of the preset's classifier entries becomes a guidance provider of the
kind it names (``model_core.sampling.providers``; ``adm_classifier`` unless
the entry says otherwise), so the pipeline never builds a classifier itself.

``get_pipeline`` caches one pipeline per (preset, device) in the process, so a
worker loads each preset once and keeps it.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from model_core import runtime, settings
from model_core.diffusion import GaussianDiffusion, create_diffusion
from model_core.images import to_uint8
from model_core.models.adm import unet_from_config
from model_core.models.loading import build_model
from model_core.presets import Preset, get_preset
from model_core.provenance import environment
from model_core.sampling import providers
from model_core.sampling.loop import StepCallback, Trajectory, sample


def default_device() -> str:
    return settings.device() or ("cuda" if torch.cuda.is_available() else "cpu")


class Pipeline:
    def __init__(self, preset: Preset, device: str | None = None, max_batch: int | None = None):
        self.preset = preset
        self.device = device or default_device()
        self.max_batch = int(max_batch or settings.max_batch())
        problems = preset.missing_checkpoints()
        if problems:
            raise FileNotFoundError("; ".join(problems))
        weights = preset.weights()
        self.unet, diff_src = build_model(unet_from_config, preset.diffusion["model"], weights["diffusion"],
                                          self.device)
        self.unet = runtime.prepare(self.unet)
        self.sources = {"diffusion": diff_src}
        self.providers: dict[str, providers.GuidanceProvider] = {}
        for method, entry in preset.classifiers.items():
            build = providers.load(entry.get("kind"))
            # A kind without a network of its own guides with this pipeline's UNet (one copy in memory).
            extra = {} if providers.get(entry.get("kind")).own_network else {
                "unet": self.unet, "unet_source": diff_src, "preset": preset}
            provider = build(entry, weights[f"classifier:{method}"], device=self.device, **extra)
            if getattr(provider, "module", None) is not None:
                provider.module = runtime.prepare(provider.module)
            self.providers[method] = provider
            self.sources[f"classifier:{method}"] = provider.source
        self.class_cond = bool(preset.diffusion["model"].get("class_cond", True))
        self.shape = (preset.in_channels, preset.image_size, preset.image_size)
        self._lock = threading.Lock()

    @property
    def classifiers(self) -> dict[str, torch.nn.Module]:
        """Method -> the provider's network, for the providers that have one (robustness evaluation)."""
        return {m: p.module for m, p in self.providers.items() if getattr(p, "module", None) is not None}

    @lru_cache(maxsize=16)
    def diffusion(self, steps: str) -> GaussianDiffusion:
        return create_diffusion(self.preset.diffusion["process"], steps)

    def provenance(self) -> dict[str, Any]:
        return {"preset": self.preset.name, "weights": dict(self.sources), "runtime": runtime.describe(),
                **environment()}

    # -- sampling ------------------------------------------------------------
    def sample_trajectories(self, trajectories: list[Trajectory], steps: str | int | None = None,
                            sampler: str | None = None, callback: StepCallback | None = None) -> torch.Tensor:
        """Sample any mix of labels, seeds and methods sharing steps and sampler.

        Batches larger than ``max_batch`` run in chunks; the callback sees one
        running step count over all chunks.
        """
        spec = self.preset.resolve_steps(steps, sampler)
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
            with self._lock, runtime.autocast(self.device):
                outs.append(sample(diffusion, self.unet, self.providers, chunk, self.shape, sampler=spec.sampler,
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
