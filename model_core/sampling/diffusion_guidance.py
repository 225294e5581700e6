"""The ``diffusion_bayes`` guidance provider: the class-conditional diffusion model guiding as its own classifier.

Bayes' rule on the noisy marginals, p_t(x | y) p(y) = p_t(y | x) p_t(x) with
a uniform p(y), gives for a class-conditional eps-model (score
-eps / sqrt(1 - alpha_bar_t))

    grad_x log p_t(y | x_t) = -(eps(x_t, t, y) - sum_y' w_y' eps(x_t, t, y')) / sqrt(1 - alpha_bar_t),
    w_y' = p_t(y' | x_t),

so the gradient needs no backward pass through the UNet, only eps for every
class at x_t and the class posterior w. This module estimates w the way the
diffusion classifier (``model_core.diffusion_classifier``) estimates
p(y | x_0), with x_t in the place of x_0: for ``draws`` noise levels s above
t it forms

    x_s = sqrt(a) x_t + sqrt(1 - a) e,    a = alpha_bar_s / alpha_bar_t,  e ~ N(0, I)

(the forward process from t to s) and scores every class by
|| c e - eps(x_s, s, y') ||^2 summed over pixels, with c = sqrt((1 - alpha_bar_s) / (1 - a)).
That target is what makes the error an x_t-denoising error: the model's mean
of x_t given x_s, E[x_t | x_s, y'] (the posterior q(x_t | x_s, x_0) at the
model's x_0), misses x_t by exactly a fixed multiple of c e - eps(x_s, s, y');
at t = 0 it is the classifier's own ||eps - eps_theta||^2. As in the
classifier, every class of an image sees the same levels and the same e
(only differences between classes matter), the errors are averaged over the
draws unweighted, and w is the softmax of their negation.

Cost per guided image and step: num_classes x (draws + 1) UNet forwards
(``providers.StepCost``). Where no level lies above t (t = T - 1, the first
step of most schedules), x_t is pure noise and w is uniform.

Levels: stratified in a (``levels``), not in the step index: a draw's class
differences are, in expectation, the true log-posterior differences times
2a (1 - alpha_bar_t) / (1 - alpha_bar_s), which vanishes as s nears T, so
levels spread evenly over (t, T) would mostly score pure noise.

Randomness: the levels (one uniform rotation of the stratified grid) and the
noise come from the generator the loop hands in for each
row, derived from the trajectory's seed and the step
(``model_core.sampling.loop.guidance_generator``): an image depends on its own
settings only, and a pair's shared sampler noise is left alone.

This departs from the TMDC paper, which classifies with the diffusion model
but never guides with it: see docs/sampling.md, "Diffusion-model guidance".
"""
from __future__ import annotations

import torch

from model_core.sampling.providers import diffusion_draws

MAX_ROWS = 256  # UNet rows (image x class x level) per forward: bounds memory, not the result


class DiffusionBayesGuidance:
    """grad_{x_t} log p_t(y | x_t) from a class-conditional eps-model ``unet(x, t, y=...)`` alone."""

    draws_noise = True  # the loop hands in one generator per row (providers module docstring)

    def __init__(self, unet: torch.nn.Module, alphas_cumprod, num_classes: int, *, draws: int = 2,
                 max_rows: int = MAX_ROWS, source: str = "in-memory"):
        self.unet = unet
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.num_timesteps = len(self.alphas_cumprod)
        self.num_classes = int(num_classes)
        self.draws = int(draws)
        self.max_rows = int(max_rows)
        self.source = source
        self.calls = 0  # UNet rows evaluated so far, for cost checks

    @property
    def evaluations_per_step(self) -> int:
        return self.num_classes * (self.draws + 1)

    def levels(self, t: int, u: torch.Tensor) -> torch.Tensor:
        """The levels s > t for fractions ``u`` in [0, 1): the first step whose alpha_bar_s is at most
        u * alpha_bar_t, kept within (t, T - 1]; s = t (unused) where no level lies above t.

        Stratified in a = alpha_bar_s / alpha_bar_t, the share of x_t's signal left at s, not in the step
        index: the class differences of a draw shrink with a (to zero as s nears T, where most steps of a
        linear schedule lie), and their noise grows as a nears 1 (s near t).
        """
        top = self.num_timesteps - 1
        if t >= top:
            return torch.full(u.shape, t, dtype=torch.long)
        target = u * self.alphas_cumprod[t]
        s = (self.alphas_cumprod.view(1, -1) > target.view(-1, 1)).sum(1)  # alpha_bar decreases with s
        return s.clamp(t + 1, top)

    def draw(self, model_t: torch.Tensor, generators: list[torch.Generator],
             shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Levels (B, draws) and noise (B, draws, *shape) for each row, from that row's generator (CPU).

        Per row: one uniform (the rotation of the stratified grid of fractions
        (j + u) / draws), then ``draws`` noise tensors.
        """
        if len(generators) != len(model_t):
            raise ValueError(f"{len(generators)} generators for {len(model_t)} rows")
        grid = torch.arange(self.draws, dtype=torch.float64)
        levels, noise = [], []
        for t, g in zip(model_t.tolist(), generators):
            u = (grid + torch.rand((), generator=g, dtype=torch.float64)) / self.draws
            levels.append(self.levels(int(t), u))
            noise.append(torch.randn((self.draws, *shape), generator=g))
        return torch.stack(levels), torch.stack(noise)

    @torch.no_grad()
    def evaluate(self, x_t: torch.Tensor, model_t: torch.Tensor,
                 generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, eps_t): class weights p_t(y' | x_t), (B, K), and eps(x_t, t, y') for every class, (B, K, C, H, W)."""
        b, k, d = x_t.shape[0], self.num_classes, self.draws
        shape = tuple(x_t.shape[1:])
        dev = x_t.device
        levels, noise = self.draw(model_t, generators, shape)
        levels, noise = levels.to(dev), noise.to(dev)
        ab = self.alphas_cumprod.to(dev)
        t = model_t.to(dev).long()
        ab_t, ab_s = ab[t].view(b, 1), ab[levels]
        above = levels > t.view(b, 1)                                       # (B, D): False only where s = t
        a = torch.where(above, ab_s / ab_t, torch.zeros_like(ab_s))
        view = (b, d) + (1,) * len(shape)
        x_s = a.sqrt().view(view).float() * x_t.float().unsqueeze(1) + (1 - a).sqrt().view(view).float() * noise
        target = torch.where(above, ((1 - ab_s) / (1 - a)).sqrt(), torch.zeros_like(ab_s)).view(view).float() * noise

        # Rows: (image, class, [t, s_1 .. s_D]); every class of an image sees the same inputs.
        xin = torch.cat([x_t.float().unsqueeze(1), x_s], 1)                 # (B, D+1, C, H, W)
        tin = torch.cat([t.view(b, 1), levels], 1)                          # (B, D+1)
        xin = xin.unsqueeze(1).expand(b, k, d + 1, *shape).reshape(-1, *shape)
        tin = tin.unsqueeze(1).expand(b, k, d + 1).reshape(-1)
        yin = torch.arange(k, device=dev).view(1, k, 1).expand(b, k, d + 1).reshape(-1)
        out = []
        for i in range(0, xin.shape[0], self.max_rows):
            sl = slice(i, i + self.max_rows)
            out.append(self.unet(xin[sl].to(x_t.dtype), tin[sl], y=yin[sl])[:, :shape[0]].float())
            self.calls += int(xin[sl].shape[0])
        eps = torch.cat(out).view(b, k, d + 1, *shape)
        err = (target.unsqueeze(1) - eps[:, :, 1:]).square().flatten(3).sum(-1).double()  # (B, K, D)
        counted = above.unsqueeze(1)                                         # (B, 1, D)
        n = counted.sum(-1).clamp_min(1)
        logits = -(err * counted).sum(-1) / n                                # (B, K); 0 where no level: uniform
        return torch.softmax(logits, dim=1).float(), eps[:, :, 0]

    def grad_log_prob(self, x_t: torch.Tensor, model_t: torch.Tensor, labels: torch.Tensor, *,
                      generators: list[torch.Generator] | None = None) -> torch.Tensor:
        if generators is None:
            raise ValueError("diffusion guidance draws noise: pass one generator per row (the loop does)")
        w, eps = self.evaluate(x_t, model_t, generators)
        b = x_t.shape[0]
        mixture = (w.view(b, -1, *([1] * (x_t.ndim - 1))) * eps).sum(1)
        own = eps[torch.arange(b, device=eps.device), labels.to(eps.device)]
        sigma = (1 - self.alphas_cumprod.to(x_t.device)[model_t.long()]).sqrt().float()
        return (-(own - mixture) / sigma.view(-1, *([1] * (x_t.ndim - 1)))).to(x_t.dtype)


def build(entry: dict, weights, *, device: str, unet: torch.nn.Module, unet_source: str,
          preset) -> DiffusionBayesGuidance:
    """The provider of a ``diffusion_bayes`` entry: the pipeline's UNet, on the preset's training process."""
    from model_core.diffusion import create_diffusion

    if not bool(preset.diffusion["model"].get("class_cond", True)):
        # Presets keep such entries out at load; this guards a hand-built pipeline.
        raise ValueError(f"preset {preset.name!r}: diffusion.model.class_cond is false; diffusion guidance needs "
                         "a class-conditional model")
    draws = diffusion_draws(entry)
    process = create_diffusion(preset.diffusion["process"])
    return DiffusionBayesGuidance(unet, process.alphas_cumprod, preset.num_classes, draws=draws,
                                  source=f"diffusion_bayes(draws={draws}) on {unet_source}")
