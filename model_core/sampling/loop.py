"""Batched, seed-exact ancestral (DDPM) and DDIM sampling with classifier guidance.

A batch is a list of *trajectories* (label, seed, method, scale). Every
trajectory owns a CPU ``torch.Generator`` seeded with its seed, from which it
draws x_T and then one noise tensor per step, the last step included (where
the noise is multiplied by zero, as in ADM). So a trajectory's image depends
only on its own settings, never on its batch neighbours, and the robust and
vanilla trajectories of a pair, which carry the same seed, share x_T and all
per-step noise. All trajectories go through the UNet in one batched forward
per step (a pair of B labels is one batch of 2B); each guiding classifier runs
on the trajectories that asked for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from model_core.diffusion.process import GaussianDiffusion, _gather
from model_core.sampling import registry
from model_core.sampling.guidance import guided_eps, guided_mean, log_prob_grad

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


class SamplingCancelled(Exception):
    """Raised by a step callback to stop sampling at the current step."""


@dataclass(frozen=True)
class Trajectory:
    label: int
    seed: int
    method: str = "none"
    scale: float = 0.0


def _check_seed(seed: int) -> int:
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed {seed} is out of range: use an integer in [0, 2**63)")
    return int(seed)


@torch.no_grad()
def sample(diffusion: GaussianDiffusion, unet: torch.nn.Module, classifiers: Mapping[str, torch.nn.Module],
           trajectories: list[Trajectory], shape: tuple[int, int, int], *, sampler: str = "ddpm",
           eta: float = 0.0, clip_denoised: bool = True, device: str | torch.device = "cpu",
           class_cond: bool = True, callback: StepCallback | None = None,
           generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """Sample every trajectory; returns x_0 as a float tensor in [-1, 1], shape (N, C, H, W).

    ``generators`` (one CPU generator per trajectory) replaces the default
    ``torch.Generator().manual_seed(seed)``; each is left advanced by exactly
    1 + num_steps draws, so a caller may continue the stream.
    """
    step_fn = registry.load(sampler)
    if not trajectories:
        raise ValueError("nothing to sample: no trajectories given")
    device = torch.device(device)
    n = len(trajectories)
    for tr in trajectories:
        if tr.method != "none" and tr.method not in classifiers:
            raise ValueError(f"guidance method {tr.method!r} has no classifier loaded")
    if generators is None:
        generators = [torch.Generator().manual_seed(_check_seed(tr.seed)) for tr in trajectories]
    elif len(generators) != n:
        raise ValueError(f"{len(generators)} generators for {n} trajectories")

    def draw() -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)

    labels = torch.tensor([tr.label for tr in trajectories], device=device, dtype=torch.long)
    scales = torch.tensor([float(tr.scale) for tr in trajectories], device=device)
    groups: dict[str, torch.Tensor] = {}
    for method in sorted({tr.method for tr in trajectories if tr.method != "none"}):
        idx = [i for i, tr in enumerate(trajectories) if tr.method == method and tr.scale != 0]
        if idx:
            groups[method] = torch.tensor(idx, device=device)
    model_kwargs = {"y": labels} if class_cond else {}

    x = draw()
    total = diffusion.num_timesteps
    for step, i in enumerate(reversed(range(total))):
        t = torch.full((n,), i, device=device, dtype=torch.long)
        model_t = diffusion.model_timesteps(t)
        out = diffusion.p_mean_variance(unet, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        grad = torch.zeros_like(x)
        for method, idx in groups.items():
            grad[idx] = log_prob_grad(classifiers[method], x[idx], model_t[idx], labels[idx])
        noise = draw()
        not_last = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
        x = step_fn(diffusion, x, t, out, grad, scales, eta, noise, not_last, bool(groups))
        if callback is not None:
            callback(step, total, x, out["pred_xstart"])
    return x


def ddpm_step(diffusion, x, t, out, grad, scales, eta, noise, not_last, guided):
    mean = guided_mean(out["mean"], out["variance"], grad, scales) if guided else out["mean"]
    return mean + not_last * torch.exp(0.5 * out["log_variance"]) * noise


def ddim_step(diffusion, x, t, out, grad, scales, eta, noise, not_last, guided):
    alpha_bar = _gather(diffusion.alphas_cumprod, t, x.shape)
    alpha_bar_prev = _gather(diffusion.alphas_cumprod_prev, t, x.shape)
    pred_xstart = out["pred_xstart"]
    if guided:
        # Score conditioning (ADM's condition_score): shift eps, re-derive x_0.
        eps = diffusion.predict_eps_from_xstart(x, t, pred_xstart)
        eps = guided_eps(eps, alpha_bar, grad, scales)
        pred_xstart = diffusion.predict_xstart_from_eps(x, t, eps)
    eps = diffusion.predict_eps_from_xstart(x, t, pred_xstart)
    sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
    mean_pred = pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    return mean_pred + not_last * sigma * noise
