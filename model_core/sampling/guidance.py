"""Classifier guidance (Dhariwal & Nichol 2021, Sec. 4; Kawar et al. Eq. 2).

The guiding signal is s * grad_{x_t} log p_phi(y | x_t, t): the gradient of the
log-softmax at the requested label, taken with respect to the *noisy* input
x_t, with the classifier's parameters untouched (``autograd.grad`` asks only
for the input's gradient, so nothing accumulates in ``.grad``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def log_prob_grad(classifier: torch.nn.Module, x_t: torch.Tensor, model_t: torch.Tensor,
                  labels: torch.Tensor) -> torch.Tensor:
    """grad_{x_t} log p(y | x_t, t) for each sample (unscaled).

    ``model_t`` must be the original training-step index, as the classifier
    was trained on it.
    """
    with torch.enable_grad():
        x_in = x_t.detach().requires_grad_(True)
        logits = classifier(x_in, model_t)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        selected = log_probs[torch.arange(len(labels), device=labels.device), labels]
        (grad,) = torch.autograd.grad(selected.sum(), x_in)
    return grad.to(x_t.dtype)


def guided_mean(mean: torch.Tensor, variance: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Ancestral step: mu + Sigma * s * grad (Sigma is the step's variance, fixed or learned)."""
    return mean + variance * (scale.view(-1, *([1] * (mean.ndim - 1))) * grad)


def guided_eps(eps: torch.Tensor, alpha_bar_t: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """DDIM step: eps - sqrt(1 - alpha_bar_t) * s * grad."""
    return eps - (1 - alpha_bar_t).sqrt() * (scale.view(-1, *([1] * (eps.ndim - 1))) * grad)
