"""Ancestral sampling (Ho et al. 2020; ADM's ``p_sample``) with classifier guidance on the mean.

x_{t-1} = mu + Sigma * s * g + sigma * z, where Sigma is the step's variance
(fixed or learned), g = grad_{x_t} log p(y | x_t, t) and z the step's noise
(multiplied by zero on the last step).
"""
from __future__ import annotations

import torch

from model_core.sampling.base import Sampler, StepContext, StepResult
from model_core.sampling.guidance import guided_mean


class DDPMSampler(Sampler):
    def step(self, ctx: StepContext) -> StepResult:
        out = ctx.out
        mean = guided_mean(out["mean"], out["variance"], ctx.grad, ctx.scales) if ctx.guided else out["mean"]
        x_prev = mean + ctx.not_last * torch.exp(0.5 * out["log_variance"]) * ctx.noise[0]
        return StepResult(x_prev, out["pred_xstart"])
