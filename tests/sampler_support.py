"""Toy networks for hand-checked sampling steps, and a throwaway sampler and guidance provider kind
registered by tests only.

``FakeUNet`` and ``FakeClassifier`` are deterministic, nonlinear in x and
dependent on t (and y), so a step that passes the wrong timestep, takes the
gradient at the wrong point or drops a term gives different numbers.

``StatefulDDIM`` is DDIM (eta 0) that draws no noise at all and counts its
steps on the instance, the way a multistep solver keeps its history: with
eta 0 DDIM multiplies its noise by zero, so it must give DDIM's images exactly
while leaving every generator advanced by x_T alone.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from model_core.sampling.adm_classifier import build as build_adm
from model_core.sampling.base import StepContext, StepResult
from model_core.sampling.ddim import DDIMSampler

SHAPE = (1, 3, 3)
NCLS = 3


class FakeUNet(torch.nn.Module):
    """Deterministic eps and learned-variance outputs that depend on x, t and y."""

    def __init__(self):
        super().__init__()
        self.seen_t = []

    def forward(self, x, t, y=None):
        self.seen_t.append(t.tolist())
        tt = t.float().view(-1, 1, 1, 1) / 1000
        eps = 0.3 * torch.tanh(x) + 0.1 * tt + 0.05 * y.float().view(-1, 1, 1, 1)
        v = torch.tanh(0.5 * x - 0.2)
        return torch.cat([eps, v], dim=1)


class FakeClassifier(torch.nn.Module):
    """Logits nonlinear in x (so a gradient taken at x_0 differs from one at x_t) and t-dependent."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(NCLS, math.prod(SHAPE), generator=g))
        self.seen_t = []

    def forward(self, x, t):
        self.seen_t.append(t.tolist())
        h = torch.sin(x.flatten(1)) * (1 + t.float().view(-1, 1) / 1000)
        return h @ self.w.t()


def ref_grad(clf, x, t_orig, y):
    x = x.detach().clone().requires_grad_(True)
    lp = F.log_softmax(torch.sin(x.flatten(1)) * (1 + t_orig / 1000) @ clf.w.detach().t(), dim=-1)
    (g,) = torch.autograd.grad(lp[0, y], x)
    return g


THROWAWAY = "throwaway_ddim"
INSTANCES: list["StatefulDDIM"] = []


class StatefulDDIM(DDIMSampler):
    def __init__(self, diffusion, options):
        super().__init__(diffusion, options)
        self.seen: list[tuple[int, int, bool, int]] = []  # (step, t, guided, noise draws)
        INSTANCES.append(self)

    def step(self, ctx: StepContext) -> StepResult:
        self.seen.append((ctx.step, int(ctx.t[0]), ctx.guided, len(ctx.noise)))
        return super().step(dataclasses.replace(ctx, noise=(torch.zeros_like(ctx.x),)))


CALLS: list[list[int]] = []  # model_t of every call of a CountingGuidance


class CountingGuidance:
    """Wraps an ADM classifier provider and records the timesteps it is asked about."""

    def __init__(self, inner):
        self.inner, self.module, self.source = inner, inner.module, "counting:" + inner.source

    def grad_log_prob(self, x_t, model_t, labels):
        CALLS.append(model_t.tolist())
        return self.inner.grad_log_prob(x_t, model_t, labels)


def build_counting(entry, weights, *, device):
    return CountingGuidance(build_adm(entry, weights, device=device))
