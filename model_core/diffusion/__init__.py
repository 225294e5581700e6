"""The Gaussian diffusion process (``process``), its respacing (``respace``) and
the factory that builds either from a preset (``build``).

``process`` imports nothing from the other two, ``respace`` only ``process``,
and ``build`` both, so the package has no import cycle.
"""
from model_core.diffusion.build import create_diffusion
from model_core.diffusion.process import GaussianDiffusion, get_named_beta_schedule
from model_core.diffusion.respace import respaced

__all__ = ["GaussianDiffusion", "create_diffusion", "get_named_beta_schedule", "respaced"]
