"""FGSM and PGD on clean images in [-1, 1], against any differentiable ``model(x) -> logits``.

Next to ``attacks.py`` (the PGD of robust training, on noisy x_t with early
stopping); these are the evaluation attacks of the robustness report
(Goodfellow et al. 2015; Madry et al. 2018): untargeted cross-entropy
ascent, projection onto the eps-ball and onto the valid pixel range
[-1, 1] after every step, no early stopping, the last iterate returned.
Radii are in the models' units here; ``threats.model_eps`` converts from
[0, 1] pixel units.

``eot`` averages the input gradient over that many forward passes at each
step (expectation over transformation): useful only when the model draws
fresh randomness at every call (``DiffusionLogits(eot=True)``); with a
deterministic model it just repeats the same gradient.

Randomness (the random start) comes from ``seed`` only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model_core.robustness.attacks import _per_sample_norm, eval_mode, project

PIXEL_RANGE = (-1.0, 1.0)


def input_gradient(model, x: torch.Tensor, labels: torch.Tensor, eot: int = 1) -> torch.Tensor:
    """Mean over ``eot`` passes of grad_x CE(model(x), labels) (summed over the batch)."""
    total = torch.zeros_like(x)
    for _ in range(max(int(eot), 1)):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x_in).float(), labels, reduction="sum")
            (g,) = torch.autograd.grad(loss, x_in)
        total += g
    return total / max(int(eot), 1)


def _step(x: torch.Tensor, grad: torch.Tensor, norm: str, size: float) -> torch.Tensor:
    if norm == "linf":
        return x + size * grad.sign()
    return x + size * grad / _per_sample_norm(grad).clamp_min(1e-12)


def fgsm(model, x: torch.Tensor, labels: torch.Tensor, *, eps: float, eot: int = 1, norm: str = "linf",
         clip: tuple[float, float] = PIXEL_RANGE) -> torch.Tensor:
    """One gradient step to the edge of the eps-ball: the signed gradient times eps (Linf, FGSM) or the
    gradient scaled to L2 length eps (L2, "FGM"). Clipping to the pixel range can only shorten it."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    with eval_mode(model):
        g = input_gradient(model, x, labels, eot)
    return _step(x, g, norm, eps).clamp(*clip).detach()


def _random_start(x: torch.Tensor, norm: str, eps: float, gen: torch.Generator) -> torch.Tensor:
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    else:
        d = torch.randn(x.shape, generator=gen)
        d = d / _per_sample_norm(d).clamp_min(1e-12)
        r = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=gen) ** (1.0 / x[0].numel())
        delta = d * r * eps
    return x + delta.to(x.device)


def pgd(model, x: torch.Tensor, labels: torch.Tensor, *, norm: str, eps: float, steps: int,
        step_size: float | None = None, random_start: bool = True, eot: int = 1, seed: int = 0,
        clip: tuple[float, float] = PIXEL_RANGE, callback=None) -> torch.Tensor:
    """Untargeted PGD; default step 2.5 eps / steps (Madry et al.'s rule). ``callback(step)`` after each step."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    step_size = 2.5 * eps / max(int(steps), 1) if step_size is None else float(step_size)
    x = x.detach()
    x_adv = x.clone()
    if random_start and eps > 0:
        x_adv = project(_random_start(x, norm, eps, torch.Generator().manual_seed(int(seed))), x, norm, eps)
        x_adv = x_adv.clamp(*clip)
    with eval_mode(model):
        for i in range(int(steps)):
            g = input_gradient(model, x_adv, labels, eot)
            x_adv = project(_step(x_adv, g, norm, step_size), x, norm, eps).clamp(*clip).detach()
            if callback is not None:
                callback(i + 1)
    return x_adv
