"""The diffusion classifier on constructed models whose denoising errors are known."""
from __future__ import annotations

import pytest
import torch

from model_core.diffusion import create_diffusion
from model_core.diffusion_classifier.classifier import DiffusionClassifier, draw_timesteps
from model_core.diffusion_classifier.schedule import (PAPER_SCHEDULE, Stage, evaluations_per_image, format_schedule,
                                                      parse_schedule)
from model_core.errors import SettingError

PROCESS = {"diffusion_steps": 1000, "noise_schedule": "linear", "learn_sigma": False}


class OracleUNet(torch.nn.Module):
    """Predicts the true noise exactly for label ``best`` (it knows x_0), and that noise plus a
    class-dependent offset for every other label. Records every call."""

    def __init__(self, x0: torch.Tensor, diffusion, best: int, offsets: torch.Tensor):
        super().__init__()
        self.x0, self.diffusion, self.best, self.offsets = x0, diffusion, best, offsets
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x_t, t, y):
        self.calls.append((x_t.detach().clone(), t.clone(), y.clone()))
        ab = torch.from_numpy(self.diffusion.alphas_cumprod).float()[t].view(-1, 1, 1, 1)
        eps = (x_t - ab.sqrt() * self.x0[: 1].expand_as(x_t)) / (1 - ab).sqrt()
        return eps + self.offsets[y].view(-1, 1, 1, 1)


def _classifier(model, schedule, num_classes=5, seed=0, max_batch=7):
    return DiffusionClassifier(model, create_diffusion(PROCESS), num_classes, schedule=schedule, seed=seed,
                               max_batch=max_batch)


def test_exact_class_is_picked_and_scores_are_the_offsets():
    diffusion = create_diffusion(PROCESS)
    x0 = torch.rand(1, 1, 4, 4) * 2 - 1
    offsets = torch.tensor([0.3, 0.2, 0.0, 0.5, 0.1])
    model = OracleUNet(x0, diffusion, 2, offsets)
    res = _classifier(model, "6").classify(x0)
    assert int(res.predictions[0]) == 2
    # error = sum over 16 pixels of offset^2, whatever the timestep and noise
    assert torch.allclose(res.mean_errors[0], 16 * offsets ** 2, atol=1e-4)
    assert torch.allclose(res.probabilities.sum(1), torch.ones(1))
    assert res.evaluations_per_image == 30 and len(torch.cat([c[2] for c in model.calls])) == 30


def test_same_timesteps_and_noise_for_every_class():
    diffusion = create_diffusion(PROCESS)
    x0 = torch.rand(2, 1, 4, 4)
    model = OracleUNet(x0, diffusion, 0, torch.zeros(5))
    _classifier(model, "4").classify(x0)
    xs = torch.cat([c[0] for c in model.calls])
    ts = torch.cat([c[1] for c in model.calls])
    ys = torch.cat([c[2] for c in model.calls])
    # rows are (image, class, draw): every class of an image sees identical x_t and t for each draw
    xs, ts, ys = xs.view(2, 5, 4, -1), ts.view(2, 5, 4), ys.view(2, 5, 4)
    assert (ys[0, :, 0] == torch.arange(5)).all()
    for k in range(1, 5):
        assert torch.equal(xs[:, k], xs[:, 0]) and torch.equal(ts[:, k], ts[:, 0])
    assert len(set(ts[0, 0].tolist())) == 4   # distinct timesteps within the list


def test_reproducible_and_batch_independent():
    diffusion = create_diffusion(PROCESS)
    x0 = torch.rand(3, 1, 4, 4)
    gen = torch.Generator().manual_seed(3)
    offsets = torch.rand(5, generator=gen)

    class Noisy(OracleUNet):
        def forward(self, x_t, t, y):  # error depends on x_t, so draws matter
            return super().forward(x_t, t, y) + 0.1 * torch.sin(7 * x_t)

    a = _classifier(Noisy(x0, diffusion, 0, offsets), "3:2,8", seed=5).classify(x0)
    b = _classifier(Noisy(x0, diffusion, 0, offsets), "3:2,8", seed=5, max_batch=1).classify(x0[1:2])
    c = _classifier(Noisy(x0, diffusion, 0, offsets), "3:2,8", seed=6).classify(x0)
    assert torch.allclose(a.logits[1:2], b.logits, atol=1e-5)
    assert not torch.allclose(a.mean_errors, c.mean_errors)


def test_staged_elimination_keeps_the_full_winner_on_a_hard_case():
    """Class 1 is best overall but only second on the early (stage-1) draws: keeping 2 after stage 1
    must not drop it (keeping 1 would, which shows the case is not trivial), at the cost the schedule says."""
    diffusion = create_diffusion(PROCESS)
    x0 = torch.zeros(1, 1, 2, 2)
    clf_full = _classifier(None, "8", num_classes=5)
    t_all, _ = clf_full.draws(8, (1, 2, 2))
    early = set(t_all[:2].tolist())

    class Crafted(torch.nn.Module):
        def forward(self, x_t, t, y):
            ab = torch.from_numpy(diffusion.alphas_cumprod).float()[t].view(-1, 1, 1, 1)
            eps = x_t / (1 - ab).sqrt()   # exact noise when x_0 = 0
            is_early = torch.tensor([int(v) in early for v in t.tolist()])
            # per-pixel offset^2 * 4 pixels = error; class 1: 0.32 early, 0.01 later; 0: 0.3 always;
            # 2, 3: 0.35 always; 4: 0.6 always
            off = torch.tensor([0.3, 0.0, 0.35, 0.35, 0.6])[y].sqrt() / 2
            off = torch.where((y == 1) & is_early, torch.tensor(0.32).sqrt() / 2, off)
            off = torch.where((y == 1) & ~is_early, torch.tensor(0.01).sqrt() / 2, off)
            return eps + off.view(-1, 1, 1, 1)

    full = _classifier(Crafted(), "8", num_classes=5).classify(x0)
    staged = _classifier(Crafted(), "2:2,8", num_classes=5).classify(x0)
    assert int(full.predictions[0]) == 1
    assert int(staged.predictions[0]) == 1
    assert int(_classifier(Crafted(), "2:1,8", num_classes=5).classify(x0).predictions[0]) == 0
    assert staged.evaluations_per_image == 2 * 5 + 6 * 2 < full.evaluations_per_image
    assert torch.isinf(staged.logits[0]).sum() == 3        # eliminated classes get probability 0
    assert (staged.timesteps_scored[0] == torch.tensor([8, 8, 2, 2, 2])).all()


def test_gradients_flow_through_the_fixed_logits():
    diffusion = create_diffusion(PROCESS)
    unet = torch.nn.Conv2d(1, 1, 3, padding=1)

    class Cond(torch.nn.Module):
        def forward(self, x_t, t, y):
            return unet(x_t) * (1 + y.view(-1, 1, 1, 1).float())

    clf = DiffusionClassifier(Cond(), diffusion, 3, schedule="4", seed=0)
    x = torch.rand(2, 1, 5, 5, requires_grad=True)
    mod = clf.logits_module(3)
    out = mod(x)
    assert out.shape == (2, 3)
    (g,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert g.abs().sum() > 0
    assert torch.equal(mod(x), out)                          # fixed draws: deterministic
    eot = clf.logits_module(3, eot=True)
    assert not torch.equal(eot(x), eot(x))                   # fresh draws every call


def test_schedule_parsing():
    assert parse_schedule(PAPER_SCHEDULE, 10) == (Stage(50, 5), Stage(500, None))
    assert evaluations_per_image(parse_schedule(PAPER_SCHEDULE, 10), 10) == 50 * 10 + 450 * 5
    assert format_schedule(parse_schedule("5:3,15", 10)) == "5:3,15"
    for bad in ("", "10:3", "10,5", "10:11,20", "10:3,20:4,30", "a", "0"):
        with pytest.raises(SettingError):
            parse_schedule(bad, 10)


def test_stratified_prefixes_spread():
    t = draw_timesteps(16, 1000, "stratified", torch.Generator().manual_seed(0))
    for n in (2, 4, 8, 16):
        bins = torch.bucketize(t[:n], torch.linspace(0, 1000, n + 1)[1:-1])
        assert len(set(bins.tolist())) == n    # one timestep in each of n equal bins
