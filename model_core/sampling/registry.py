"""The samplers, by name: the one list that the API, the survey, the CLI and evaluation offer.

Torch-free, so that the API validates ``sampler`` at the edge without
loading torch: an entry names its implementation as ``"module:attribute"``,
imported only when a trajectory loop runs it. Everything that offers
samplers (API and survey schemas, ``rguide sample``/``evaluate``, steps
parsing) reads ``names()``; the database stores the name as data.

Adding a sampler is

1. its module, e.g. ``model_core/sampling/dpm_solver.py``, with a subclass of
   ``model_core.sampling.base.Sampler`` whose ``step(ctx)`` returns the next x
   and the x_0 prediction to show (it may keep state on ``self`` between
   steps: one instance serves one batch, from the first step to the last);
2. one ``register(SamplerInfo(...))`` line below, with the number of noise
   tensors it consumes per step (the loop draws them from each trajectory's
   generator and passes them in ``ctx.noise``);
3. its test (against hand-written reference steps, as in tests/model_core/sampling/test_sampling.py).

Plugins and tests may also ``register`` at run time (and ``unregister``).
"""
from __future__ import annotations

from dataclasses import dataclass

from model_core.registry import LazyRegistry



@dataclass(frozen=True)
class SamplerInfo:
    name: str
    target: str                 # "package.module:Attribute", the sampler's class
    summary: str                # one line for help texts and the API docs
    stochastic: bool            # draws fresh noise during the trajectory
    noise_draws_per_step: int   # standard-normal tensors drawn per step and trajectory (after x_T)
    spacing_prefix: str | None = None  # a steps spec starting with this ("ddim25") implies this sampler


_REGISTRY: LazyRegistry[SamplerInfo] = LazyRegistry("sampler")
register, unregister, names, get, load = (_REGISTRY.register, _REGISTRY.unregister, _REGISTRY.names, _REGISTRY.get,
                                          _REGISTRY.load)


def implied_by_spacing(spec: str) -> str | None:
    """The sampler a steps spec names by its prefix (``ddim25`` -> ``ddim``), if any."""
    for info in _REGISTRY:
        if info.spacing_prefix and spec.startswith(info.spacing_prefix):
            return info.name
    return None


register(SamplerInfo(
    "ddpm", "model_core.sampling.ddpm:DDPMSampler", "ancestral sampling (Ho et al.; ADM's p_sample)",
    stochastic=True, noise_draws_per_step=1))
register(SamplerInfo(
    "ddim", "model_core.sampling.ddim:DDIMSampler", "DDIM (Song et al.), eta 0; guidance shifts eps (ADM's condition_score)",
    stochastic=False, noise_draws_per_step=1, spacing_prefix="ddim"))
register(SamplerInfo(
    "dpmpp_2m", "model_core.sampling.dpm_solver:DPMSolverPP2M",
    "DPM-Solver++(2M) (Lu et al.), multistep, data prediction; one model evaluation per step",
    stochastic=False, noise_draws_per_step=0))
register(SamplerInfo(
    "dpmpp_2m_sde", "model_core.sampling.dpm_solver:DPMSolverPP2MSDE",
    "SDE-DPM-Solver++(2M) (Lu et al.), eta 1; one model evaluation and one noise draw per step",
    stochastic=True, noise_draws_per_step=1))
