"""Classify images with one of a preset's defences (``threats.DEFENCES``): the front ends' one entry point."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from model_core.robustness.threats import DEFENCES


def classify_pixels(pipeline, pixels: list[np.ndarray], method: str, *, schedule: str | None = None, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """uint8 (H, W, C) images -> per image: prediction, class name, probabilities, network evaluations.

    ``progress(done, total)`` counts network evaluations (diffusion) or images (classifiers).
    """
    from model_core.robustness.defences import load_defences

    if method not in DEFENCES:
        raise ValueError(f"method {method!r} is unknown; choose from {', '.join(DEFENCES)}")
    x = torch.stack([torch.from_numpy(np.array(p, copy=True)).permute(2, 0, 1).float() / 127.5 - 1.0
                     for p in pixels]).to(pipeline.device)
    defence = load_defences(pipeline, (method,), schedule=schedule, seed=seed)[method]
    per_image = defence.evaluations_per_image
    total = per_image * len(pixels)
    done = [0]
    if method == "diffusion":
        dc = defence.attack_model.classifier

        def tick(k):
            done[0] += k
            if progress is not None:
                progress(done[0], total)

        res = dc.classify(x, progress=tick)
        preds, probs = res.predictions, res.probabilities
    else:
        preds, probs = defence.predict(x)
        if progress is not None:
            progress(total, total)
    names = pipeline.preset.class_names
    out = []
    for p, q in zip(preds.tolist(), probs.tolist()):
        out.append({"prediction": int(p), "class_name": names[int(p)], "probabilities": [round(v, 6) for v in q],
                    "method": method, "network_evaluations": per_image,
                    "settings": {k: v for k, v in defence.describe().items() if k != "attack_gradient"}})
    return out
