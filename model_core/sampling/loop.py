"""The trajectory loop: batched, seed-exact sampling with any registered sampler and any guidance provider.

A batch is a list of *trajectories* (label, seed, method, scale). Every
trajectory owns a CPU ``torch.Generator`` seeded with its seed, from which it
draws x_T and then the sampler's ``noise_draws_per_step`` noise tensors per
step, the last step included (where DDPM multiplies its noise by zero, as in
ADM). So a trajectory's image depends only on its own settings, never on its
batch neighbours, and the robust and vanilla trajectories of a pair, which
carry the same seed, share x_T and all per-step noise. All trajectories go
through the UNet in one batched forward per step (a pair of B labels is one
batch of 2B); each guidance provider runs on the trajectories that asked for it.

A provider that draws noise of its own (``draws_noise``, e.g. the diffusion
model guiding as its own classifier) gets, per step, one generator per
trajectory derived from that trajectory's seed and the step
(``guidance_generator``), not the trajectory's stream: its draws are as
reproducible as the image and leave the sampler's noise, and so a pair's
shared noise, untouched.

The loop knows no sampler by name: it looks the name up in
``model_core.sampling.registry``, makes one sampler object for the batch
(``model_core.sampling.base``) and calls its ``step`` with a ``StepContext``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from model_core.diffusion.process import GaussianDiffusion
from model_core.sampling import providers, registry
from model_core.sampling.base import SamplerOptions, StepContext

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


class SamplingCancelled(Exception):
    """Raised by a step callback to stop sampling at the current step."""


@dataclass(frozen=True)
class Trajectory:
    label: int
    seed: int
    method: str = "none"
    scale: float = 0.0


_MASK64 = (1 << 64) - 1


def guidance_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for a guidance provider's draws at one step of one trajectory.

    A function of (seed, step) alone, mixed by SplitMix64 so that nearby seeds
    and steps give unrelated streams and none replays a trajectory's own stream
    (``manual_seed(seed)``, whose x_T it would correlate with); a collision of
    the 63-bit mix is possible in principle, as for any derived seed.
    """
    z = (int(seed) + 0x9E3779B97F4A7C15 * (int(step) + 1) + 0x5DEECE66D) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return torch.Generator().manual_seed(z & (2**63 - 1))


def _check_seed(seed: int) -> int:
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed {seed} is out of range: use an integer in [0, 2**63)")
    return int(seed)


@torch.no_grad()
def sample(diffusion: GaussianDiffusion, unet: torch.nn.Module, guides: Mapping[str, Any],
           trajectories: list[Trajectory], shape: tuple[int, int, int], *, sampler: str = "ddpm",
           eta: float = 0.0, clip_denoised: bool = True, device: str | torch.device = "cpu",
           class_cond: bool = True, callback: StepCallback | None = None,
           generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """Sample every trajectory; returns x_0 as a float tensor in [-1, 1], shape (N, C, H, W).

    ``guides`` maps a guidance method to its provider
    (``model_core.sampling.providers.GuidanceProvider``); a bare
    ``torch.nn.Module`` is taken as an ADM time-dependent classifier.
    ``generators`` (one CPU generator per trajectory) replaces the default
    ``torch.Generator().manual_seed(seed)``; each is left advanced by exactly
    1 + num_steps * noise_draws_per_step draws, so a caller may continue the stream.
    """
    info = registry.get(sampler)
    sampler_cls = registry.load(sampler)
    if not trajectories:
        raise ValueError("nothing to sample: no trajectories given")
    device = torch.device(device)
    n = len(trajectories)
    for tr in trajectories:
        if tr.method != "none" and tr.method not in guides:
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
    active = {method: providers.as_provider(guides[method]) for method in groups}
    model_kwargs = {"y": labels} if class_cond else {}
    stepper = sampler_cls(diffusion, SamplerOptions(eta=eta))

    x = draw()
    total = diffusion.num_timesteps
    for step, i in enumerate(reversed(range(total))):
        t = torch.full((n,), i, device=device, dtype=torch.long)
        model_t = diffusion.model_timesteps(t)
        out = diffusion.p_mean_variance(unet, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        grad = None
        if groups:
            grad = torch.zeros_like(x)
            for method, idx in groups.items():
                provider = active[method]
                if getattr(provider, "draws_noise", False):
                    # initial_seed: the trajectory's seed, or that of a generator the caller handed in.
                    gens = [guidance_generator(generators[int(i)].initial_seed(), step) for i in idx]
                    grad[idx] = provider.grad_log_prob(x[idx], model_t[idx], labels[idx], generators=gens)
                else:
                    grad[idx] = provider.grad_log_prob(x[idx], model_t[idx], labels[idx])
        noise = tuple(draw() for _ in range(info.noise_draws_per_step))
        not_last = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
        result = stepper.step(StepContext(step=step, x=x, t=t, model_t=model_t, out=out, grad=grad,
                                          scales=scales if groups else None, noise=noise, not_last=not_last))
        x = result.x_prev
        if callback is not None:
            callback(step, total, x, result.pred_xstart)
    return x
