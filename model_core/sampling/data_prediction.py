"""What the data-prediction samplers share: the guided x_0 of a step and the noise levels around it.

DDIM and the DPM-Solver++ family (Lu et al. 2022) step with the data
prediction D(x_t) = x_0. Classifier guidance enters it through the noise
prediction, as in ADM's ``condition_score``: eps <- eps - sqrt(1 - alpha_bar_t)
* s * g, so D moves by (1 - alpha_bar_t) / sqrt(alpha_bar_t) * s * g.

A step goes from the process's index ``t`` (alpha_bar = ``alphas_cumprod[t]``)
to the next kept index (``alphas_cumprod_prev[t]``; 1 after the last step, so
the last step lands on x_0 itself). Both are training indices: the samplers
never evaluate the networks between them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model_core.diffusion.process import GaussianDiffusion, _gather
from model_core.sampling.base import StepContext
from model_core.sampling.guidance import guided_eps


def guided_pred_xstart(d: GaussianDiffusion, ctx: StepContext) -> torch.Tensor:
    """The step's x_0 with the score shift on the guided rows (the model's own x_0 elsewhere).

    Only the guided rows take the eps -> x_0 round trip: it would change an
    unguided row's low bits, so the row would depend on whether a guided
    trajectory shared its batch.
    """
    pred_xstart = ctx.out["pred_xstart"]
    if not ctx.guided:
        return pred_xstart
    x, t = ctx.x, ctx.t
    alpha_bar = _gather(d.alphas_cumprod, t, x.shape)
    eps = d.predict_eps_from_xstart(x, t, pred_xstart)
    shifted = d.predict_xstart_from_eps(x, t, guided_eps(eps, alpha_bar, ctx.grad, ctx.scales))
    rows = (ctx.scales != 0).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(rows, shifted, pred_xstart)


@dataclass(frozen=True)
class Levels:
    """alpha, sigma and lambda = log(alpha / sigma) at t and at the next point, float64, shape (N, 1, 1, 1).

    After the last step sigma_next = 0 and lambda_next = inf.
    """
    alpha: torch.Tensor
    sigma: torch.Tensor
    lam: torch.Tensor
    alpha_next: torch.Tensor
    sigma_next: torch.Tensor
    lam_next: torch.Tensor

    @property
    def h(self) -> torch.Tensor:
        return self.lam_next - self.lam

    @property
    def final(self) -> torch.Tensor:
        return self.sigma_next == 0


def levels(d: GaussianDiffusion, ctx: StepContext) -> Levels:
    t = ctx.t.cpu()
    shape = (-1, *([1] * (ctx.x.ndim - 1)))

    def at(table: np.ndarray):
        abar = torch.from_numpy(table)[t].view(shape)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        return alpha, sigma, alpha.log() - sigma.log()  # +inf where sigma = 0

    return Levels(*at(d.alphas_cumprod), *at(d.alphas_cumprod_prev))


def as_coefficient(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A float64 per-row coefficient in the dtype and on the device of the trajectories."""
    return value.to(device=like.device, dtype=like.dtype)
