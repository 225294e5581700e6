"""The beta schedules of the diffusion process (numpy, torch-free).

Torch-free so that ``model_core.steps`` can place log-SNR-uniform steps
(``"logsnr20"``) on a preset's schedule when the API validates a request.
``model_core.diffusion.process`` builds its process from the same function,
so both see the same alpha-bar bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("linear", "cosine")


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    if name == "linear":
        # Scaled so that any number of steps gives the same endpoints as 1000.
        scale = 1000 / num_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "cosine":
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
             for i in range(num_timesteps)],
            dtype=np.float64,
        )
    raise ValueError(f"noise_schedule {name!r} is unknown; choose 'linear' or 'cosine'")


def alphas_cumprod(name: str, num_timesteps: int) -> np.ndarray:
    """alpha-bar at every training index, as ``GaussianDiffusion`` computes it."""
    return np.cumprod(1.0 - get_named_beta_schedule(name, num_timesteps))
