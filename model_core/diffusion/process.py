"""Gaussian diffusion in the notation of Dhariwal & Nichol (ADM).

``alphas_cumprod`` is the paper's alpha-bar (called alpha_t in Kawar et al.'s
Eq. 3). Schedules are computed in float64 with numpy and gathered per batch
element, as in the public ADM code, so that a respaced process keeps alpha-bar
at its kept steps exactly.

A process may be *respaced* (see ``respace.py``): it then holds a
``timestep_map`` from its own step index to the original training step, and
every model and classifier call goes through :meth:`model_timesteps`, so the
networks always see the original index (999, 995, ...).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from model_core.noise_schedules import get_named_beta_schedule  # noqa: F401 (re-exported)

MODEL_VAR_TYPES = ("fixed_small", "fixed_large", "learned_range")
LOSS_TYPES = ("mse", "rescaled_mse", "kl", "rescaled_kl")


def _gather(values: np.ndarray, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    out = torch.from_numpy(values).to(device=t.device)[t].float()
    return out.reshape(-1, *([1] * (len(shape) - 1)))


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of 8-bit data in [-1, 1] under a discretised Gaussian."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=list(range(1, x.ndim)))


class GaussianDiffusion:
    """Forward process, posterior and the model's reverse-step parameters."""

    def __init__(self, betas, model_var_type: str = "learned_range", loss_type: str = "mse",
                 timestep_map: list[int] | None = None):
        if model_var_type not in MODEL_VAR_TYPES:
            raise ValueError(f"model_var_type {model_var_type!r} is unknown; choose one of {MODEL_VAR_TYPES}")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type {loss_type!r} is unknown; choose one of {LOSS_TYPES}")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array of values in (0, 1]")
        self.betas = betas
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.num_timesteps = len(betas)
        self.timestep_map = list(range(self.num_timesteps)) if timestep_map is None else list(timestep_map)
        self._timestep_map_np = np.asarray(self.timestep_map, dtype=np.int64)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t=0; the log is clipped to its t=1 value.
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # -- timesteps ---------------------------------------------------------
    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Original training-step indices for this process's step indices."""
        return torch.from_numpy(self._timestep_map_np).to(t.device)[t]

    # -- forward process ---------------------------------------------------
    def q_mean_variance(self, x_start, t):
        mean = _gather(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
        variance = _gather(1.0 - self.alphas_cumprod, t, x_start.shape)
        log_variance = _gather(self.log_one_minus_alphas_cumprod, t, x_start.shape)
        return mean, variance, log_variance

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
        if noise is None:
            noise = torch.randn_like(x_start)
        return (_gather(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + _gather(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        mean = (_gather(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + _gather(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        variance = _gather(self.posterior_variance, t, x_t.shape)
        log_variance = _gather(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance

    # -- reverse process ---------------------------------------------------
    def predict_xstart_from_eps(self, x_t, t, eps):
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

    def predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return ((_gather(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart)
                / _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def split_model_output(self, x: torch.Tensor, out: torch.Tensor):
        """(eps, variance-interpolation values or None) from a model output."""
        channels = x.shape[1]
        if self.model_var_type == "learned_range":
            if out.shape[1] != 2 * channels:
                raise ValueError(f"a learned-variance model must output {2 * channels} channels, got {out.shape[1]}")
            return out[:, :channels], out[:, channels:]
        if out.shape[1] != channels:
            raise ValueError(f"a fixed-variance model must output {channels} channels, got {out.shape[1]}")
        return out, None

    def variance_from_output(self, v: torch.Tensor | None, t: torch.Tensor, shape):
        """The step's (variance, log-variance): fixed, or learned as in Improved DDPM.

        Learned range: the model's v in [-1, 1] interpolates the log-variance
        between beta_t (frac=1) and the clipped posterior variance (frac=0)
        with frac = (v + 1) / 2.
        """
        if self.model_var_type == "learned_range":
            min_log = _gather(self.posterior_log_variance_clipped, t, shape)
            max_log = _gather(np.log(self.betas), t, shape)
            frac = (v + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            return torch.exp(log_variance), log_variance
        if self.model_var_type == "fixed_large":
            # beta_t, but the posterior variance at t=0 for a better decoder likelihood.
            variance = np.append(self.posterior_variance[1], self.betas[1:])
            return (_gather(variance, t, shape).expand(shape), _gather(np.log(variance), t, shape).expand(shape))
        return (_gather(self.posterior_variance, t, shape).expand(shape),
                _gather(self.posterior_log_variance_clipped, t, shape).expand(shape))

    def p_mean_variance(self, model: Callable, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True,
                        model_kwargs: dict | None = None, model_output: torch.Tensor | None = None) -> dict:
        """Mean and variance of p(x_{t-1} | x_t) and the predicted x_0.

        ``model_output`` may be passed in when the caller already ran the
        model (pair sampling runs one batched forward for two trajectories).
        """
        if model_output is None:
            model_output = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        eps, v = self.split_model_output(x, model_output)
        variance, log_variance = self.variance_from_output(v, t, x.shape)
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_xstart": pred_xstart, "eps": eps}

    # -- training ----------------------------------------------------------
    def _vb_terms_bpd(self, x_start, x_t, t, mean, log_variance):
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        kl = _mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(x_start, mean, 0.5 * log_variance)
        decoder_nll = _mean_flat(decoder_nll) / math.log(2.0)
        # At the first step the term is the decoder's negative log-likelihood.
        return torch.where(t == 0, decoder_nll, kl)

    def training_losses(self, model: Callable, x_start: torch.Tensor, t: torch.Tensor,
                        model_kwargs: dict | None = None, noise: torch.Tensor | None = None) -> dict:
        """Per-sample losses: "mse" on eps, plus "vb" when the variance is learned.

        With a learned variance the loss is the hybrid of Improved DDPM:
        mse + vb, where vb sees the predicted mean with its gradient stopped so
        that it trains only the variance (scaled by T/1000 for rescaled_mse).
        """
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise)
        out = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        eps, v = self.split_model_output(x_t, out)
        terms: dict[str, torch.Tensor] = {}
        if self.loss_type in ("kl", "rescaled_kl"):
            variance, log_variance = self.variance_from_output(v, t, x_t.shape)
            pred_xstart = self.predict_xstart_from_eps(x_t, t, eps)
            mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
            terms["loss"] = self._vb_terms_bpd(x_start, x_t, t, mean, log_variance)
            if self.loss_type == "rescaled_kl":
                terms["loss"] = terms["loss"] * self.num_timesteps
            return terms
        terms["mse"] = _mean_flat((noise - eps) ** 2)
        terms["loss"] = terms["mse"]
        if v is not None:
            _, log_variance = self.variance_from_output(v, t, x_t.shape)
            pred_xstart = self.predict_xstart_from_eps(x_t, t, eps.detach())
            mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
            vb = self._vb_terms_bpd(x_start, x_t, t, mean, log_variance)
            if self.loss_type == "rescaled_mse":
                vb = vb * self.num_timesteps / 1000.0
            terms["vb"] = vb
            terms["loss"] = terms["mse"] + vb
        return terms


