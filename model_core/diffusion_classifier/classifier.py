"""The diffusion classifier: p(y | x) from the class-conditional denoising error (Li et al. 2023; TMDC).

    log p(y | x) = -E_{t, eps} || eps - eps_theta(x_t, t, y) ||^2 + const,
    x_t = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) eps,

estimated by Monte Carlo over a fixed list of (timestep, noise) pairs. Every
class sees the **same** pairs: only the differences between classes decide the
label, and shared draws cancel most of the estimator's variance in those
differences. The squared error is summed over pixels (the unweighted "simple"
loss of Ho et al., not ELBO-weighted, as Li et al.); its mean over the
timesteps is the negated logit.

The (timestep, noise) list is drawn once from ``seed`` and is the same for
every image, so a classification depends on (weights, image, schedule,
seed) only, never on the batch it ran in. Timesteps are ``stratified`` by
default: a randomly rotated van der Corput sequence over [0, T), so that
every prefix (each elimination stage scores a prefix) is spread over the
whole range; ``uniform`` draws them independently.

Two uses:

* :meth:`DiffusionClassifier.classify` predicts with staged elimination
  (``schedule.py``), batched over images x classes x timesteps, no gradients;
* :meth:`DiffusionClassifier.logits_module` is a differentiable
  ``nn.Module`` x -> logits over *all* classes on a fixed number of timesteps
  (the first ones of the list, i.e. the very draws prediction uses), or, with
  ``eot=True``, fresh timesteps and noise at every call, for attacks that
  average gradients over draws (expectation over transformation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from model_core.diffusion_classifier.schedule import (DEMO_SCHEDULE, TIMESTEP_POLICIES, Stage, evaluations_per_image,
                                                      format_schedule, max_timesteps, parse_schedule)
from model_core.errors import SettingError


def _van_der_corput(n: int) -> torch.Tensor:
    """The first n points of the base-2 van der Corput sequence: a prefix of 2^k points is the lattice j / 2^k."""
    out = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        k, f, v = i, 0.5, 0.0
        while k:
            v += f * (k & 1)
            k >>= 1
            f *= 0.5
        out[i] = v
    return out


def draw_timesteps(n: int, num_timesteps: int, policy: str, generator: torch.Generator) -> torch.Tensor:
    if policy not in TIMESTEP_POLICIES:
        raise SettingError("timestep_policy", f"{{timestep_policy}} {policy!r} is unknown; choose one of "
                                              f"{', '.join(TIMESTEP_POLICIES)}")
    if policy == "uniform":
        return torch.randint(0, num_timesteps, (n,), generator=generator)
    shift = float(torch.rand((), generator=generator, dtype=torch.float64))
    u = (_van_der_corput(n) + shift) % 1.0
    return (u * num_timesteps).long().clamp(0, num_timesteps - 1)


@dataclass
class Classification:
    predictions: torch.Tensor   # int64 (B,)
    logits: torch.Tensor        # (B, num_classes): -mean error; -inf for classes eliminated before the last stage
    mean_errors: torch.Tensor   # (B, num_classes): mean error over the timesteps each class was scored on
    timesteps_scored: torch.Tensor  # int64 (B, num_classes): how many timesteps each class was scored on
    evaluations_per_image: int

    @property
    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=1)


class DiffusionClassifier:
    """A class-conditional epsilon-prediction UNet ``unet(x_t, t, y=...)`` used as a classifier.

    ``diffusion`` is the model's (unrespaced) training process. ``max_batch``
    bounds the rows (image x class x timestep) of one network call.
    """

    def __init__(self, unet: torch.nn.Module, diffusion, num_classes: int, *, schedule: str = DEMO_SCHEDULE,
                 seed: int = 0, timestep_policy: str = "stratified", max_batch: int = 250, device: str = "cpu"):
        if diffusion.num_timesteps != len(diffusion.timestep_map) or diffusion.timestep_map[-1] != \
                diffusion.num_timesteps - 1:
            raise ValueError("the diffusion classifier scores the training process; pass an unrespaced diffusion")
        self.unet = unet
        self.diffusion = diffusion
        self.num_classes = int(num_classes)
        self.stages: tuple[Stage, ...] = parse_schedule(schedule, self.num_classes)
        self.seed = int(seed)
        self.timestep_policy = timestep_policy
        self.max_batch = int(max_batch)
        self.device = device
        self.calls = 0          # network evaluations made so far (rows through the UNet), for cost reports
        self._draws: tuple[torch.Tensor, torch.Tensor] | None = None
        self._shape: tuple[int, ...] | None = None

    # -- the fixed draws ---------------------------------------------------------
    def draws(self, n: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` (timesteps, noise) of the list drawn from ``seed`` (the same for every class and image)."""
        need = max(n, max_timesteps(self.stages))
        if self._draws is None or self._shape != tuple(shape) or len(self._draws[0]) < need:
            gen = torch.Generator().manual_seed(self.seed)
            t = draw_timesteps(need, self.diffusion.num_timesteps, self.timestep_policy, gen)
            noise = torch.randn((need, *shape), generator=gen)
            self._draws, self._shape = (t, noise), tuple(shape)
        t, noise = self._draws
        return t[:n].to(self.device), noise[:n].to(self.device)

    def describe(self) -> dict:
        return {"schedule": format_schedule(self.stages), "seed": self.seed, "timestep_policy": self.timestep_policy,
                "noise_policy": "shared: one noise draw per timestep, the same for every class and image",
                "error": "sum over pixels of (eps - eps_theta)^2, mean over timesteps; logit = -error",
                "evaluations_per_image": evaluations_per_image(self.stages, self.num_classes)}

    # -- scoring ------------------------------------------------------------------
    def errors(self, x0: torch.Tensor, classes: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Squared error per (image, class, draw): shape (B, K, n); differentiable in ``x0``.

        ``classes`` is (K,) (the same for every image) or (B, K); ``t`` (n,)
        and ``noise`` (n, C, H, W) are the draws, shared by all classes.
        """
        b, n = x0.shape[0], t.shape[0]
        if classes.ndim == 1:
            classes = classes.unsqueeze(0).expand(b, -1)
        k = classes.shape[1]
        rows_img = torch.arange(b, device=x0.device).view(b, 1, 1).expand(b, k, n).reshape(-1)
        rows_cls = classes.to(x0.device).view(b, k, 1).expand(b, k, n).reshape(-1)
        rows_draw = torch.arange(n, device=x0.device).view(1, 1, n).expand(b, k, n).reshape(-1)
        out = []
        channels = x0.shape[1]
        for i in range(0, rows_img.numel(), self.max_batch):
            ri, rc, rd = (r[i:i + self.max_batch] for r in (rows_img, rows_cls, rows_draw))
            tt, eps = t[rd], noise[rd]
            x_t = self.diffusion.q_sample(x0[ri], tt, eps)
            pred = self.unet(x_t, self.diffusion.model_timesteps(tt), y=rc)[:, :channels]
            out.append((eps - pred.float()).square().flatten(1).sum(1))
            self.calls += int(ri.numel())
        return torch.cat(out).view(b, k, n)

    @torch.no_grad()
    def classify(self, x0: torch.Tensor, progress: Callable[[int], None] | None = None) -> Classification:
        """Staged elimination over the schedule. ``progress(n_evaluations)`` is called as work is done."""
        x0 = x0.to(self.device).float()
        b = x0.shape[0]
        t_all, noise_all = self.draws(max_timesteps(self.stages), tuple(x0.shape[1:]))
        sums = torch.zeros(b, self.num_classes, device=self.device, dtype=torch.float64)
        scored = torch.zeros(b, self.num_classes, dtype=torch.long, device=self.device)
        alive = torch.arange(self.num_classes, device=self.device).unsqueeze(0).expand(b, -1).contiguous()
        done = 0
        for stage in self.stages:
            t, noise = t_all[done:stage.timesteps], noise_all[done:stage.timesteps]
            err = self.errors(x0, alive, t, noise)
            sums.scatter_add_(1, alive, err.double().sum(-1))
            scored.scatter_add_(1, alive, torch.full_like(alive, len(t)))
            if progress is not None:
                progress(err.numel())
            done = stage.timesteps
            mean_alive = sums.gather(1, alive) / done
            if stage.keep is not None:
                # Stable order: on equal errors the smaller class index survives, so results do not depend on topk.
                order = torch.sort(mean_alive, dim=1, stable=True).indices[:, :stage.keep]
                alive = alive.gather(1, order)
        mean = torch.where(scored > 0, sums / scored.clamp_min(1), torch.full_like(sums, float("inf")))
        logits = torch.full_like(sums, float("-inf"))
        logits.scatter_(1, alive, -mean.gather(1, alive))
        pred = alive.gather(1, mean.gather(1, alive).argmin(1, keepdim=True)).squeeze(1)
        return Classification(pred.cpu(), logits.float().cpu(), mean.float().cpu(), scored.cpu(),
                              evaluations_per_image(self.stages, self.num_classes))

    def logits_module(self, timesteps: int | None = None, *, eot: bool = False, eot_seed: int = 1) -> "DiffusionLogits":
        """A differentiable x -> logits over all classes (see the module docstring)."""
        return DiffusionLogits(self, timesteps or self.stages[0].timesteps, eot=eot, eot_seed=eot_seed)


class DiffusionLogits(torch.nn.Module):
    """-mean error over ``timesteps`` draws for every class; gradients flow to the input only.

    Fixed (``eot=False``): the first ``timesteps`` draws of the classifier, the
    same at every call, so an attack sees one deterministic function whose
    draws the prediction also uses. ``eot=True``: every call draws fresh
    timesteps and noise from its own generator (seeded by ``eot_seed``).
    """

    def __init__(self, classifier: DiffusionClassifier, timesteps: int, *, eot: bool = False, eot_seed: int = 1):
        super().__init__()
        self.classifier = classifier
        self.timesteps = int(timesteps)
        self.eot = bool(eot)
        self._gen = torch.Generator().manual_seed(int(eot_seed))

    @property
    def evaluations_per_call(self) -> int:
        return self.timesteps * self.classifier.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.classifier
        shape = tuple(x.shape[1:])
        if self.eot:
            t = draw_timesteps(self.timesteps, c.diffusion.num_timesteps, c.timestep_policy, self._gen).to(x.device)
            noise = torch.randn((self.timesteps, *shape), generator=self._gen).to(x.device)
        else:
            t, noise = c.draws(self.timesteps, shape)
        classes = torch.arange(c.num_classes, device=x.device)
        return -c.errors(x.float(), classes, t, noise).mean(-1)


def from_pipeline(pipeline, **kwargs) -> DiffusionClassifier:
    """The diffusion classifier of a loaded preset (``model_core.pipeline.Pipeline``)."""
    from model_core.diffusion import create_diffusion

    if not pipeline.class_cond:
        raise SettingError("preset", f"preset {pipeline.preset.name!r} has an unconditional diffusion model; the "
                                     "diffusion classifier needs a class-conditional one")
    diffusion = create_diffusion(pipeline.preset.diffusion["process"])
    return DiffusionClassifier(pipeline.unet, diffusion, pipeline.preset.num_classes, device=pipeline.device,
                               **kwargs)
