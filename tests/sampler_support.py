"""A throwaway sampler and a throwaway guidance provider kind, registered by tests only.

``StatefulDDIM`` is DDIM (eta 0) that draws no noise at all and counts its
steps on the instance, the way a multistep solver keeps its history: with
eta 0 DDIM multiplies its noise by zero, so it must give DDIM's images exactly
while leaving every generator advanced by x_T alone.
"""
from __future__ import annotations

import dataclasses

import torch

from model_core.sampling.adm_classifier import build as build_adm
from model_core.sampling.base import StepContext, StepResult
from model_core.sampling.ddim import DDIMSampler

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
