"""The sampler interface: what the trajectory loop hands a sampler each step, and what it gets back.

The loop (``model_core.sampling.loop``) owns everything a sampler must not
care about: the per-trajectory generators and the noise they draw, batching,
guidance providers, callbacks and cancellation. A sampler owns the update
rule. The loop makes one sampler per trajectory batch,

    sampler = SamplerClass(diffusion, SamplerOptions(eta=...))

where ``diffusion`` is the (respaced) process the batch runs on, and calls
``sampler.step(ctx)`` once per step, from the noisiest step to t = 0. An
instance may keep state between steps (a multistep solver's previous model
outputs); it is never reused for another batch.

Register a new sampler in ``model_core.sampling.registry`` with its
``noise_draws_per_step``: the loop draws exactly that many standard-normal
tensors per step and trajectory (the last step included) and passes them in
``ctx.noise``, so every trajectory's random stream stays aligned whatever its
batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import torch

    from model_core.diffusion.process import GaussianDiffusion


@dataclass(frozen=True)
class SamplerOptions:
    """Settings of a sampler that are not per step (the same for the whole batch)."""
    eta: float = 0.0  # DDIM's stochasticity (0: deterministic); samplers without one ignore it


@dataclass(frozen=True)
class StepContext:
    """One step of a batch of N trajectories (tensors on the loop's device, batch first)."""
    step: int                          # 0 for the first (noisiest) step, counting up
    x: torch.Tensor                    # x_t, (N, C, H, W)
    t: torch.Tensor                    # respaced step index, (N,); index into the diffusion's tables
    model_t: torch.Tensor              # the original training index the networks saw, (N,)
    out: Mapping[str, torch.Tensor]    # GaussianDiffusion.p_mean_variance: mean, variance, log_variance, pred_xstart
    grad: torch.Tensor | None          # unscaled grad_{x_t} log p(y | x_t, t), zero for unguided trajectories;
                                       # None when no trajectory of the batch is guided
    scales: torch.Tensor | None        # guidance scale per trajectory, (N,); None with grad
    noise: tuple[torch.Tensor, ...]    # noise_draws_per_step tensors of shape (N, C, H, W)
    not_last: torch.Tensor             # (N, 1, 1, 1) float: 0 on the last step (t = 0), else 1

    @property
    def guided(self) -> bool:
        return self.grad is not None


@dataclass(frozen=True)
class StepResult:
    x_prev: torch.Tensor       # x_{t-1} (x_0 after the last step)
    pred_xstart: torch.Tensor  # the x_0 prediction the step callback shows


class Sampler:
    """Base class of the registered samplers; subclasses implement ``step``."""

    def __init__(self, diffusion: GaussianDiffusion, options: SamplerOptions = SamplerOptions()):
        self.diffusion = diffusion
        self.options = options

    def step(self, ctx: StepContext) -> StepResult:  # pragma: no cover - interface
        raise NotImplementedError
