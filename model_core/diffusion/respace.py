"""A diffusion process that keeps a subset of the training steps.

The new betas are chosen so that alpha-bar at every kept step equals the
original alpha-bar there: beta'_i = 1 - abar[k_i] / abar[k_{i-1}]. The process
remembers the original index of each kept step (``timestep_map``) and passes
it to the networks.
"""
from __future__ import annotations

import numpy as np

from model_core.diffusion.process import GaussianDiffusion
from model_core.steps import parse_steps


def respaced(base_betas, spec: str | int, **kwargs) -> GaussianDiffusion:
    base_betas = np.asarray(base_betas, dtype=np.float64)
    alphas_cumprod = np.cumprod(1.0 - base_betas)
    kept = parse_steps(spec, num_timesteps=len(base_betas), alphas_cumprod=alphas_cumprod).timesteps
    new_betas = []
    last = 1.0
    for k in kept:
        new_betas.append(1.0 - alphas_cumprod[k] / last)
        last = alphas_cumprod[k]
    return GaussianDiffusion(np.array(new_betas), timestep_map=list(kept), **kwargs)
