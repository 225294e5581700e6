"""A network in memory from an architecture config and a preset's weights spec.

Used by the pipeline for the diffusion model and by guidance providers for
their classifiers, so every preset model is loaded the same way: weights from
the resolved checkpoint (or a seeded random initialisation), fp16 on CUDA
when the config asks for it, eval mode, no parameter gradients.
"""
from __future__ import annotations

from typing import Callable

import torch

from model_core.provenance import file_sha256


def build_model(builder: Callable[[dict], torch.nn.Module], cfg: dict, weights,
                device: str) -> tuple[torch.nn.Module, str]:
    """``(model, source)``; ``weights`` is a ``model_core.presets.WeightsSpec``, ``source`` its provenance."""
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
