"""DPM-Solver++ (Lu et al. 2022), multistep second order in data prediction: ODE (2M) and SDE (2M SDE).

With alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t), lambda_t =
log(alpha_t / sigma_t) and h = lambda_next - lambda_t, one step from t to the
next kept index (Algorithm 2 of the DPM-Solver++ paper) is

    2M:      x_next = (sigma_next / sigma) x - alpha_next (e^-h - 1) D'
    2M SDE:  x_next = (sigma_next / sigma) e^-h x + alpha_next (1 - e^-2h) D' + sigma_next sqrt(1 - e^-2h) z

where D = x_0 of this step's one model evaluation, guided through the noise
prediction (eps - sqrt(1 - alpha_bar_t) s g; ``data_prediction``) at every
evaluation, and D' = D + (D - D_prev) / (2 r), r = h_prev / h, the multistep
correction with the previous step's D. The first step has no D_prev and the
last one (to alpha_bar = 1, sigma = 0, h = inf) is taken first order, D' = D,
so it lands on x_0 = D exactly, as DDIM's last step does. ``--steps N`` is N
model evaluations at the N kept training indices; no step evaluates the
networks anywhere else. DPM-Solver++(2M)'s first-order step is DDIM (eta 0).

The SDE variant (eta 1) draws one standard-normal tensor per step from each
trajectory's generator (also on the last step, where sigma_next = 0 zeroes
it); the ODE variant draws none. Coefficients are computed in float64 from
the process's alpha-bar tables and applied in the trajectories' dtype.
"""
from __future__ import annotations

import torch

from model_core.sampling.base import Sampler, SamplerOptions, StepContext, StepResult
from model_core.sampling.data_prediction import Levels, as_coefficient, guided_pred_xstart, levels


class _MultistepDataPrediction(Sampler):
    """Keeps the previous step's D and h: one instance serves one batch from its first step to its last."""

    def __init__(self, diffusion, options: SamplerOptions = SamplerOptions()):
        super().__init__(diffusion, options)
        self._prev: tuple[torch.Tensor, torch.Tensor] | None = None

    def corrected(self, denoised: torch.Tensor, lv: Levels) -> torch.Tensor:
        """D' = D + (D - D_prev) / (2 r); D on the first step and on the last (sigma_next = 0)."""
        h = lv.h
        prev, self._prev = self._prev, (denoised, h)
        if prev is None:
            return denoised
        prev_denoised, h_prev = prev
        half_inv_r = torch.where(lv.final, torch.zeros_like(h), h / (2 * h_prev))
        return denoised + as_coefficient(half_inv_r, denoised) * (denoised - prev_denoised)


class DPMSolverPP2M(_MultistepDataPrediction):
    def step(self, ctx: StepContext) -> StepResult:
        lv = levels(self.diffusion, ctx)
        denoised = guided_pred_xstart(self.diffusion, ctx)
        d = self.corrected(denoised, lv)
        c_x = lv.sigma_next / lv.sigma
        c_d = -lv.alpha_next * torch.expm1(-lv.h)
        x_next = as_coefficient(c_x, ctx.x) * ctx.x + as_coefficient(c_d, d) * d
        return StepResult(x_next, denoised)


class DPMSolverPP2MSDE(_MultistepDataPrediction):
    def step(self, ctx: StepContext) -> StepResult:
        lv = levels(self.diffusion, ctx)
        denoised = guided_pred_xstart(self.diffusion, ctx)
        d = self.corrected(denoised, lv)
        one_minus = -torch.expm1(-2 * lv.h)  # 1 - e^-2h
        c_x = lv.sigma_next / lv.sigma * torch.exp(-lv.h)
        c_d = lv.alpha_next * one_minus
        c_z = lv.sigma_next * one_minus.sqrt()
        x_next = (as_coefficient(c_x, ctx.x) * ctx.x + as_coefficient(c_d, d) * d
                  + as_coefficient(c_z, ctx.x) * ctx.noise[0])
        return StepResult(x_next, denoised)
