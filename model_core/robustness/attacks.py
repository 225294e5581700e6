"""PGD attacks on a time-dependent classifier ``classifier(x_t, t) -> logits``.

* :func:`pgd_untargeted` is the attack of robust training (Kawar et al.,
  Eq. 5 and Sec. 5.1): it perturbs the *noisy* input x_t inside an L2 or Linf
  ball to raise the cross-entropy of the true label, with per-sample early
  stopping: before every step the current predictions are checked and samples
  already misclassified are left where they are; the loop ends as soon as all
  samples are fooled or the step budget is spent.
* :func:`pgd_targeted` is class maximisation (the paper's Figure 4: L2 ball of
  radius 100, 7 steps): it lowers the cross-entropy of a target class, with
  no early stopping.

Both differentiate with ``torch.autograd.grad`` with respect to the input
only, so nothing is ever accumulated in the parameters' ``.grad``. Both run the
classifier in eval mode (dropout off, normalisation statistics frozen) so the
attack sees the same deterministic function that is then judged, and put the
module back in the mode they found it in. x_t is not clamped to [-1, 1]: noisy
images legitimately leave that range; pass ``clip`` to clamp clean images.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NORMS = ("l2", "linf")


@dataclass
class AttackResult:
    x_adv: torch.Tensor         # the attacked inputs (detached)
    steps_used: torch.Tensor    # int64 (N,): gradient steps applied to each sample
    clean_correct: torch.Tensor  # bool (N,): correct before any step
    fooled: torch.Tensor        # bool (N,): misclassified at the end (untargeted) / predicted as target (targeted)
    stopped_early: torch.Tensor  # bool (N,): left alone before the step budget was spent

    @property
    def adv_correct(self) -> torch.Tensor:
        return ~self.fooled


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """Put a module (and all its children) in eval mode, restoring every submodule's flag after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def _check(norm: str, eps: float, step_size: float, steps: int) -> None:
    if norm not in NORMS:
        raise ValueError(f"attack norm {norm!r} is unknown; choose 'l2' or 'linf'")
    if not eps >= 0:
        raise ValueError(f"attack eps must be >= 0, got {eps}")
    if not step_size > 0:
        raise ValueError(f"attack step size must be > 0, got {step_size}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"attack steps must be a non-negative integer, got {steps}")


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))


def _ascend(x: torch.Tensor, grad: torch.Tensor, norm: str, step_size: float) -> torch.Tensor:
    if norm == "linf":
        return x + step_size * grad.sign()
    # A zero gradient gives no direction: such samples do not move.
    return x + step_size * grad / _per_sample_norm(grad).clamp_min(1e-12)


def project(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """The point of the eps-ball around x nearest to x_adv (per sample)."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = _per_sample_norm(delta)
        delta = delta * torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
    return x + delta


def _input_grad(classifier, x_adv, t, labels, sign: float) -> torch.Tensor:
    with torch.enable_grad():
        x_in = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(classifier(x_in, t).float(), labels, reduction="sum")
        (grad,) = torch.autograd.grad(sign * loss, x_in)
    return grad


@torch.no_grad()
def pgd_untargeted(classifier: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, *,
                   norm: str = "l2", eps: float = 0.5, step_size: float = 0.083, steps: int = 7,
                   early_stop: bool = True, clip: tuple[float, float] | None = None) -> AttackResult:
    """Untargeted PGD with per-sample early stopping (the paper's A(x_t, phi)).

    A sample takes a gradient step only while it is still classified
    correctly; once fooled it stays as it is. The returned ``fooled`` is
    measured on the final inputs (each step re-checks the samples it moved).
    """
    _check(norm, eps, step_size, steps)
    x = x.detach()
    n = x.shape[0]
    x_adv = x.clone()
    steps_used = torch.zeros(n, dtype=torch.long, device=x.device)
    with eval_mode(classifier):
        correct = classifier(x_adv, t).argmax(-1) == labels
        clean_correct = correct.clone()
        for _ in range(int(steps)):
            active = correct if early_stop else torch.ones_like(correct)
            if not active.any():
                break
            idx = active.nonzero().squeeze(1)
            grad = _input_grad(classifier, x_adv[idx], t[idx], labels[idx], 1.0)
            moved = _ascend(x_adv[idx], grad, norm, step_size)
            moved = project(moved, x[idx], norm, eps)
            if clip is not None:
                moved = moved.clamp(*clip)
            x_adv[idx] = moved
            steps_used[idx] += 1
            # Only the samples that moved can change their prediction.
            correct[idx] = classifier(moved, t[idx]).argmax(-1) == labels[idx]
    fooled = ~correct
    stopped_early = steps_used < int(steps)
    return AttackResult(x_adv.detach(), steps_used, clean_correct, fooled, stopped_early)


@torch.no_grad()
def pgd_targeted(classifier: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, targets: torch.Tensor, *,
                 norm: str = "l2", eps: float = 100.0, steps: int = 7, step_size: float | None = None,
                 clip: tuple[float, float] | None = (-1.0, 1.0)) -> AttackResult:
    """Class maximisation: minimise CE(classifier(x + delta, t), target) over the eps-ball.

    The default step size, 2.5 * eps / steps, is the rule of the paper's
    Appendix E. ``clip`` keeps clean images (t = 0) in the valid pixel range;
    pass None for noisy inputs.
    """
    step_size = 2.5 * eps / max(int(steps), 1) if step_size is None else step_size
    _check(norm, eps, step_size, steps)
    x = x.detach()
    x_adv = x.clone()
    with eval_mode(classifier):
        clean_hit = classifier(x_adv, t).argmax(-1) == targets
        for _ in range(int(steps)):
            grad = _input_grad(classifier, x_adv, t, targets, -1.0)
            x_adv = project(_ascend(x_adv, grad, norm, step_size), x, norm, eps)
            if clip is not None:
                x_adv = x_adv.clamp(*clip)
        hit = classifier(x_adv, t).argmax(-1) == targets
    n = x.shape[0]
    return AttackResult(x_adv.detach(), torch.full((n,), int(steps), dtype=torch.long, device=x.device),
                        clean_hit, hit, torch.zeros(n, dtype=torch.bool, device=x.device))
