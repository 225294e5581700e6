"""Guidance by the class-conditional diffusion model itself (``diffusion_bayes``, the ``diffusion`` method).

The shift is -(eps_y - sum_y' w_y' eps_y') / sqrt(1 - alpha_bar_t), with w
the diffusion classifier's estimate of p_t(y' | x_t). Checked on point-mass
classes, where eps is exact and log p_t(y | x_t) has a closed form; the
estimator's draws are shared by the classes and come from a generator derived
from the trajectory's seed and step, so the seed contract of the loop holds.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from model_core import presets
from model_core.diffusion import create_diffusion
from model_core.sampling import providers, registry
from model_core.sampling.diffusion_guidance import DiffusionBayesGuidance
from model_core.sampling.loop import Trajectory, guidance_generator, sample
from sampler_support import FakeClassifier, FakeUNet

TRAIN = create_diffusion({"learn_sigma": True})   # the 1000-step training process
AB = torch.as_tensor(TRAIN.alphas_cumprod, dtype=torch.float64)
K, SHAPE = 3, (1, 8, 8)


def class_means() -> torch.Tensor:
    """Three well-separated 8x8 patterns in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    return torch.sign(torch.randn((K, *SHAPE), generator=g))


class PointMassUNet(torch.nn.Module):
    """The exact eps of p(x_0 | y) = delta(m_y): eps = (x - sqrt(ab_t) m_y) / sqrt(1 - ab_t); learned-sigma layout.

    Records every batch it sees, to check what the classes were shown.
    """

    def __init__(self, means):
        super().__init__()
        self.means = means
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append((x.clone(), t.clone(), y.clone()))
        ab = AB[t].float().view(-1, 1, 1, 1)
        eps = (x - ab.sqrt() * self.means[y]) / (1 - ab).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], 1)


def exact_log_posterior_grad(means, x, t, y):
    """grad_x log p_t(y | x) for point masses: a Gaussian mixture's posterior, by autograd."""
    ab = float(AB[t])
    x = x.detach().clone().requires_grad_(True)
    d2 = ((x.unsqueeze(1) - math.sqrt(ab) * means.unsqueeze(0)) ** 2).flatten(2).sum(-1)   # (B, K)
    logp = torch.log_softmax(-d2 / (2 * (1 - ab)), dim=1)
    (g,) = torch.autograd.grad(logp[torch.arange(len(y)), y].sum(), x)
    return g


def noisy(means, labels, t, seed):
    g = torch.Generator().manual_seed(seed)
    ab = float(AB[t])
    return math.sqrt(ab) * means[labels] + math.sqrt(1 - ab) * torch.randn((len(labels), *SHAPE), generator=g)


def provider(unet, draws=2):
    return DiffusionBayesGuidance(unet, TRAIN.alphas_cumprod, K, draws=draws)


def test_the_shift_is_the_bayes_identity_with_the_estimated_weights():
    means = class_means()
    unet = PointMassUNet(means)
    p = provider(unet, draws=3)
    t = torch.tensor([200, 200, 600])
    labels = torch.tensor([0, 1, 2])
    x = noisy(means, torch.tensor([0, 0, 1]), 200, seed=1)
    gens = lambda: [guidance_generator(s, 4) for s in (10, 11, 12)]  # noqa: E731
    w, eps = p.evaluate(x, t, gens())
    assert w.shape == (3, K) and torch.allclose(w.sum(1), torch.ones(3))
    got = p.grad_log_prob(x, t, labels, generators=gens())
    own = torch.stack([unet(x[i:i + 1], t[i:i + 1], y=labels[i:i + 1])[:, :1] for i in range(3)]).squeeze(1)
    mix = sum(w[:, k].view(-1, 1, 1, 1) * unet(x, t, y=torch.full((3,), k))[:, :1] for k in range(K))
    want = -(own - mix) / (1 - AB[t]).sqrt().float().view(-1, 1, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Cost: every class at t and at each of the 3 levels, per row.
    assert p.evaluations_per_step == K * 4 and p.calls == 2 * 3 * K * 4


def test_with_exact_eps_the_shift_is_the_exact_gradient_of_log_p_t_y_given_x():
    # x_t drawn from class 0's point mass: the estimate and the truth both put (nearly) all weight on class 0,
    # and the shift toward class 1 or 2 is then the closed-form gradient. A wrong sign, a missing
    # 1 / sqrt(1 - alpha_bar) or weights on the wrong class would all show here.
    means = class_means()
    p = provider(PointMassUNet(means), draws=4)
    for t in (100, 400):
        x = noisy(means, torch.zeros(3, dtype=torch.long), t, seed=t)
        model_t = torch.full((3,), t)
        labels = torch.tensor([0, 1, 2])
        w, _ = p.evaluate(x, model_t, [guidance_generator(7, i) for i in range(3)])
        assert (w[:, 0] > 0.999).all(), w
        got = p.grad_log_prob(x, model_t, labels, generators=[guidance_generator(7, i) for i in range(3)])
        want = exact_log_posterior_grad(means, x, t, labels)
        torch.testing.assert_close(got, want.float(), rtol=1e-3, atol=1e-3)
        assert want[1:].abs().max() > 1.0  # not a trivially zero comparison


def test_every_class_sees_the_same_levels_and_noise_and_the_weights_are_the_documented_estimate():
    means = class_means()
    unet = PointMassUNet(means)
    p = provider(unet, draws=2)
    x = noisy(means, torch.tensor([2, 0]), 300, seed=3)
    t = torch.tensor([300, 990])
    w, _ = p.evaluate(x, t, [guidance_generator(5, 0), guidance_generator(6, 0)])
    xs, ts, ys = (torch.cat(parts) for parts in zip(*unet.seen))
    rows = xs.view(2, K, 3, *SHAPE), ts.view(2, K, 3), ys.view(2, K, 3)
    for k in range(1, K):  # identical inputs and levels for every class of an image
        assert torch.equal(rows[0][:, k], rows[0][:, 0]) and torch.equal(rows[1][:, k], rows[1][:, 0])
    assert (rows[2] == torch.arange(K).view(1, K, 1)).all()
    assert (rows[1][:, :, 0] == t.view(2, 1)).all() and (rows[1][:, 0, 1:] > t.view(2, 1)).all()
    assert (rows[1][:, 0, 1:] <= 999).all()
    # The estimate by hand: draws in the documented order (one uniform, then the noise), the forward process
    # from t to s, target sqrt((1 - ab_s) / (1 - a)) e, squared error summed over pixels, mean over levels.
    for i, seed in enumerate((5, 6)):
        g = guidance_generator(seed, 0)
        u0 = torch.rand((), generator=g, dtype=torch.float64)
        e = torch.randn((2, *SHAPE), generator=g)
        tt = int(t[i])
        # Stratified in a = ab_s / ab_t: the first step at or below the fraction (j + u0) / 2 of ab_t, above t.
        levels = [min(max(next((s for s in range(1000) if AB[s] <= (j + u0) / 2 * AB[tt]), 999), tt + 1), 999)
                  for j in range(2)]
        assert rows[1][i, 0, 1:].tolist() == levels
        errs = torch.zeros(K, dtype=torch.float64)
        for j, s in enumerate(levels):
            a = float(AB[s] / AB[tt])
            x_s = math.sqrt(a) * x[i] + math.sqrt(1 - a) * e[j]
            target = math.sqrt((1 - float(AB[s])) / (1 - a)) * e[j]
            for k in range(K):
                pred = unet(x_s.unsqueeze(0), torch.tensor([s]), y=torch.tensor([k]))[0, :1]
                errs[k] += ((target - pred) ** 2).sum().double() / 2
        torch.testing.assert_close(w[i].double(), torch.softmax(-errs, 0), rtol=1e-4, atol=1e-6)


def test_no_level_above_the_last_step_means_uniform_weights():
    p = provider(PointMassUNet(class_means()))
    w, _ = p.evaluate(torch.randn(1, *SHAPE), torch.tensor([999]), [guidance_generator(1, 0)])
    torch.testing.assert_close(w, torch.full((1, K), 1 / K))


def test_guidance_generators_depend_on_seed_and_step_only():
    draw = lambda seed, step: torch.randn(4, generator=guidance_generator(seed, step))  # noqa: E731
    assert torch.equal(draw(3, 7), draw(3, 7))
    assert not torch.equal(draw(3, 7), draw(3, 8)) and not torch.equal(draw(3, 7), draw(4, 7))
    assert not torch.equal(draw(3, 0), torch.randn(4, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="one generator per row"):
        provider(PointMassUNet(class_means())).grad_log_prob(torch.zeros(1, *SHAPE), torch.tensor([5]),
                                                             torch.tensor([0]))


class ConditionalFake(FakeUNet):
    """FakeUNet (3 channels of eps in sampler_support's 1-channel layout) whose eps also depends on y nonlinearly,
    so that the classes disagree and the guidance shift is not zero."""

    def forward(self, x, t, y=None):
        out = super().forward(x, t, y)
        return torch.cat([out[:, :1] + 0.2 * torch.sin(x * (1 + y.float().view(-1, 1, 1, 1))), out[:, 1:]], 1)


@pytest.mark.parametrize("sampler", registry.names())
def test_seed_contract_batch_independence_and_pairs_share_noise(sampler):
    shape = (1, 3, 3)
    d = create_diffusion({"learn_sigma": True}, "5")
    unet = ConditionalFake()
    guides = {"diffusion": DiffusionBayesGuidance(unet, TRAIN.alphas_cumprod, 3, draws=2),
              "robust": FakeClassifier(1)}
    alone = sample(d, unet, guides, [Trajectory(1, 42, "diffusion", 2.0)], shape, sampler=sampler)
    again = sample(d, unet, guides, [Trajectory(1, 42, "diffusion", 2.0)], shape, sampler=sampler)
    assert torch.equal(alone, again)
    plain = sample(d, unet, guides, [Trajectory(1, 42, "none", 0.0)], shape, sampler=sampler)
    assert (alone - plain).abs().max() > 1e-3  # the guidance does something
    other_seed = sample(d, unet, guides, [Trajectory(1, 43, "diffusion", 2.0)], shape, sampler=sampler)
    assert not torch.allclose(alone, other_seed)
    batch = [Trajectory(i % 3, 100 + i, ("diffusion", "robust", "none")[i % 3], 0.5) for i in range(7)]
    batch.insert(4, Trajectory(1, 42, "diffusion", 2.0))
    together = sample(d, unet, guides, batch, shape, sampler=sampler)
    torch.testing.assert_close(together[4:5], alone, rtol=0, atol=1e-6)
    # A diffusion/robust pair on one seed: the provider's draws come from derived generators, so both streams
    # advance by x_T and the sampler's draws only, exactly as an unguided trajectory's.
    gens = [torch.Generator().manual_seed(7) for _ in range(2)]
    sample(d, unet, guides, [Trajectory(2, 7, "diffusion", 1.0), Trajectory(2, 7, "robust", 1.0)], shape,
           sampler=sampler, generators=gens)
    ref = torch.Generator().manual_seed(7)
    for _ in range(1 + d.num_timesteps * registry.get(sampler).noise_draws_per_step):
        torch.randn(shape, generator=ref)
    assert all(torch.equal(g.get_state(), ref.get_state()) for g in gens)


# -- presets, pipeline, requests ------------------------------------------------

TINY = json.loads((presets.PRESET_DIR / "tiny.json").read_text())


def _tiny_with_diffusion(tmp_path, **entry) -> presets.Preset:
    raw = json.loads(json.dumps(TINY))
    raw["classifiers"]["diffusion"] = {"kind": "diffusion_bayes", **entry}
    path = tmp_path / "tinydiff.json"
    path.write_text(json.dumps(raw))
    return presets._load(path)


def test_demo_offers_diffusion_with_its_cost_and_demo_uncond_says_why_not():
    demo, uncond = presets.get_preset("demo"), presets.get_preset("demo-uncond")
    assert "diffusion" in demo.methods and "diffusion" not in demo.networks
    assert demo.guidance_cost("diffusion") == providers.StepCost(unet=10 * (providers.DEFAULT_DIFFUSION_DRAWS + 1))
    assert demo.guidance_cost("robust") == providers.StepCost(classifier=1)
    assert demo.to_public_dict()["guidance_cost"]["diffusion"] == {"unet": 30, "classifier": 0}
    assert "diffusion" not in uncond.methods and "diffusion.model.class_cond" in uncond.unavailable["diffusion"]
    with pytest.raises(ValueError, match=r"not available on preset 'demo-uncond'.*diffusion\.model\.class_cond"):
        uncond.methods_for("diffusion")


def test_draws_are_checked_at_load(tmp_path):
    assert _tiny_with_diffusion(tmp_path, draws=5).guidance_cost("diffusion").unet == 4 * 6
    with pytest.raises(ValueError, match=r"classifiers\.diffusion: draws must be a whole number in 1\.\.64"):
        _tiny_with_diffusion(tmp_path, draws=0)


def test_the_generation_request_on_an_unconditional_preset_names_the_field():
    from model_core.generation_request import RequestInvalid, resolve_generation

    with pytest.raises(RequestInvalid) as info:
        resolve_generation(preset="demo-uncond", class_labels=[3], guidance="diffusion", seed=1,
                           check_weights=False)
    (err,) = info.value.errors
    assert err.field == ("guidance",) and "class_cond" in err.message
    ok = resolve_generation(preset="demo", class_labels=[3], guidance="diffusion", seed=1, check_weights=False)
    assert ok.methods == ("diffusion",) and ok.scales == {"diffusion": 1.0}


def test_the_pipeline_guides_with_its_own_unet_and_keeps_the_seed_contract(tmp_path):
    from model_core.pipeline import Pipeline

    pipe = Pipeline(_tiny_with_diffusion(tmp_path, draws=1), "cpu")
    prov = pipe.providers["diffusion"]
    assert prov.unet is pipe.unet and "diffusion" not in pipe.classifiers
    assert pipe.sources["classifier:diffusion"].startswith("diffusion_bayes(draws=1) on ")
    one = pipe.sample([1], [5], "diffusion", 2.0, "3")[0]
    assert (one == pipe.sample([1], [5], "diffusion", 2.0, "3")[0]).all()
    assert not (one == pipe.sample([1], [5], "none", None, "3")[0]).all()
    batch = pipe.sample([2, 1, 0], [9, 5, 11], "diffusion", 2.0, "3")
    assert (batch[1] == one).all()
    calls = prov.calls
    pipe.sample([0], [1], "diffusion", 2.0, "3")
    assert prov.calls - calls == 3 * 4 * (1 + 1)  # steps x classes x (draws + 1)


def test_evaluation_rows_count_the_diffusion_methods_unet_forwards():
    import numpy as np

    from model_core.evaluation.plan import EvalSettings, Plan, Row
    from model_core.evaluation.shards import row_result

    labels = tuple(range(10))
    plan = Plan(EvalSettings(preset="demo", methods=["none", "robust", "diffusion"]), "demo", (), labels,
                "digits", None, "mnist", "test")
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(20, 8)), rng.normal(size=(10, 8)).astype(np.float32)
    cost = {m: row_result(plan, Row(0, "ddpm", "50", 50, m, 1.0, 0, 0), fake, None, real, None)
            for m in ("none", "robust", "diffusion")}
    assert {m: (r["unet_evals_per_image"], r["classifier_evals_per_image"]) for m, r in cost.items()} == {
        "none": (50, 0), "robust": (50, 50), "diffusion": (50 * (1 + 10 * 3), 0)}
