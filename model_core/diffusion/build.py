"""A diffusion process from a preset's ``process`` dict, respaced or not."""
from __future__ import annotations

from model_core.diffusion.process import GaussianDiffusion, get_named_beta_schedule
from model_core.diffusion.respace import respaced


def create_diffusion(cfg: dict, timestep_respacing: str | int | None = None) -> GaussianDiffusion:
    """Build a (possibly respaced) process from a preset's diffusion dict.

    Keys: ``diffusion_steps`` (1000), ``noise_schedule`` ("linear"),
    ``learn_sigma`` (bool), ``sigma_small`` (bool, fixed variances only),
    ``use_kl`` and ``rescale_learned_sigmas`` (loss choice, as in ADM).
    """
    steps = int(cfg.get("diffusion_steps", 1000))
    betas = get_named_beta_schedule(cfg.get("noise_schedule", "linear"), steps)
    if cfg.get("learn_sigma", False):
        var_type = "learned_range"
    else:
        var_type = "fixed_small" if cfg.get("sigma_small", False) else "fixed_large"
    if cfg.get("use_kl", False):
        loss_type = "rescaled_kl"
    elif cfg.get("rescale_learned_sigmas", False):
        loss_type = "rescaled_mse"
    else:
        loss_type = "mse"
    if timestep_respacing in (None, ""):
        return GaussianDiffusion(betas, model_var_type=var_type, loss_type=loss_type)
    return respaced(betas, timestep_respacing, model_var_type=var_type, loss_type=loss_type)
