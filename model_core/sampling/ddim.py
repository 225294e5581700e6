"""DDIM (Song et al. 2021) with classifier guidance as a score shift (ADM's ``condition_score``).

eps <- eps - sqrt(1 - alpha_bar_t) * s * g, x_0 re-derived from the shifted
eps, then the DDIM update with stochasticity ``eta`` (0: deterministic; the
step's noise draw is still consumed, so the stream matches DDPM's).
"""
from __future__ import annotations

import torch

from model_core.diffusion.process import _gather
from model_core.sampling.base import Sampler, StepContext, StepResult
from model_core.sampling.data_prediction import guided_pred_xstart


class DDIMSampler(Sampler):
    def step(self, ctx: StepContext) -> StepResult:
        d, x, t = self.diffusion, ctx.x, ctx.t
        alpha_bar = _gather(d.alphas_cumprod, t, x.shape)
        alpha_bar_prev = _gather(d.alphas_cumprod_prev, t, x.shape)
        pred_xstart = guided_pred_xstart(d, ctx)  # score conditioning (ADM's condition_score)
        eps = d.predict_eps_from_xstart(x, t, pred_xstart)
        eta = self.options.eta
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        mean_pred = pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        # The callback sees the guided x_0, as ADM's ddim_sample yields it: previews, progress pictures
        # and trajectories show what the step actually moves toward.
        return StepResult(mean_pred + ctx.not_last * sigma * ctx.noise[0], pred_xstart)
