"""The guided sampling loop against hand-written reference steps.

Each test here fails on one of the usual mistakes: respaced timesteps passed
to the networks, the gradient taken at the predicted x_0 instead of x_t, the
step variance left out of the mean shift, guidance skipped on the last step,
a noise draw missing at t=0, or DDIM's eps shift.
"""
import math

import pytest
import torch

from model_core.diffusion import create_diffusion
from model_core.sampling import registry
from model_core.sampling.guidance import log_prob_grad
from model_core.sampling.loop import SamplingCancelled, Trajectory, sample
from sampler_support import NCLS, SHAPE, FakeClassifier, FakeUNet, ref_grad

def reference_ddpm(d, unet, clf, label, seed, scale, guided=True):
    """One trajectory, written out step by step from the formulas (float64 schedule)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g).unsqueeze(0)
    for i in reversed(range(d.num_timesteps)):
        t_orig = d.timestep_map[i]
        out = unet(x, torch.tensor([t_orig]), y=torch.tensor([label]))
        eps, v = out[:, :1], out[:, 1:]
        ab, ab_prev, beta = d.alphas_cumprod[i], d.alphas_cumprod_prev[i], d.betas[i]
        x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
        mean = (beta * math.sqrt(ab_prev) / (1 - ab)) * x0 + ((1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab)) * x
        frac = (v + 1) / 2
        logvar = frac * math.log(beta) + (1 - frac) * float(d.posterior_log_variance_clipped[i])
        if guided:
            mean = mean + logvar.exp() * scale * ref_grad(clf, x, t_orig, label)
        noise = torch.randn(SHAPE, generator=g).unsqueeze(0)
        x = mean + (0.0 if i == 0 else 1.0) * (0.5 * logvar).exp() * noise
    return x, g


@pytest.mark.parametrize("sampler,steps", [(name, "7") for name in registry.names()]
                         + [("ddim", "ddim5"), ("dpmpp_2m", "logsnr7"), ("dpmpp_2m_sde", "logsnr7")])
def test_networks_see_original_timesteps_every_step_including_the_last(sampler, steps):
    # One UNet and one classifier evaluation per step, always at an original (integer) training index:
    # "--steps 7" is 7 model evaluations for every sampler, the multistep solvers included.
    d = create_diffusion({"learn_sigma": True}, steps)
    unet, clf = FakeUNet(), FakeClassifier()
    sample(d, unet, {"robust": clf}, [Trajectory(1, 0, "robust", 1.0)], SHAPE, sampler=sampler)
    want = list(reversed(d.timestep_map))
    assert [s[0] for s in unet.seen_t] == want and len(want) == (5 if steps == "ddim5" else 7)
    assert [s[0] for s in clf.seen_t] == want  # guidance on every step, t=0 included
    # "7" strides to the last training step; "ddim5" is range(0, 1000, 200).
    assert want[0] == (800 if steps == "ddim5" else 999) and want[-1] == 0


def test_ddpm_guided_trajectory_matches_reference_and_consumes_one_draw_per_step():
    d = create_diffusion({"learn_sigma": True}, "6")
    unet, clf = FakeUNet(), FakeClassifier()
    gens = [torch.Generator().manual_seed(123)]
    got = sample(d, unet, {"robust": clf}, [Trajectory(2, 123, "robust", 2.0)], SHAPE, generators=gens)
    want, ref_gen = reference_ddpm(d, unet, clf, 2, 123, 2.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Same stream position: x_T plus one draw per step, the t=0 step included.
    assert torch.equal(gens[0].get_state(), ref_gen.get_state())


def test_the_guidance_shift_is_scaled_by_the_step_variance_and_taken_at_x_t():
    d = create_diffusion({"learn_sigma": True}, "4")
    unet, clf = FakeUNet(), FakeClassifier()
    guided = sample(d, unet, {"robust": clf}, [Trajectory(0, 5, "robust", 3.0)], SHAPE)
    plain = sample(d, unet, {"robust": clf}, [Trajectory(0, 5, "none", 0.0)], SHAPE)
    assert not torch.allclose(guided, plain)
    # A reference with the shift left unscaled by Sigma, or taken at x_0, differs.
    want, _ = reference_ddpm(d, unet, clf, 0, 5, 3.0)
    torch.testing.assert_close(guided, want, rtol=1e-5, atol=1e-5)
    unguided_ref, _ = reference_ddpm(d, unet, clf, 0, 5, 0.0, guided=False)
    torch.testing.assert_close(plain, unguided_ref, rtol=1e-5, atol=1e-5)


def test_last_step_is_guided():
    """Changing only the classifier's verdict at t=0 must change the output."""
    d = create_diffusion({"learn_sigma": True}, "3")
    unet = FakeUNet()

    class OnlyAtZero(FakeClassifier):
        def forward(self, x, t):
            return super().forward(x, t) * (t == 0).float().view(-1, 1)

    out = sample(d, unet, {"robust": OnlyAtZero()}, [Trajectory(1, 9, "robust", 5.0)], SHAPE)
    plain = sample(d, unet, {"robust": OnlyAtZero()}, [Trajectory(1, 9, "none", 0.0)], SHAPE)
    assert (out - plain).abs().max() > 1e-4


def test_ddim_shifts_eps_by_sqrt_one_minus_alpha_bar():
    d = create_diffusion({"learn_sigma": True}, "ddim4")
    unet, clf = FakeUNet(), FakeClassifier()
    got = sample(d, unet, {"robust": clf}, [Trajectory(1, 3, "robust", 1.5)], SHAPE, sampler="ddim")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(SHAPE, generator=g).unsqueeze(0)
    for i in reversed(range(d.num_timesteps)):
        t_orig = d.timestep_map[i]
        eps = unet(x, torch.tensor([t_orig]), y=torch.tensor([1]))[:, :1]
        ab, ab_prev = d.alphas_cumprod[i], d.alphas_cumprod_prev[i]
        x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        eps = eps - math.sqrt(1 - ab) * 1.5 * ref_grad(clf, x, t_orig, 1)
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        x = x0 * math.sqrt(ab_prev) + math.sqrt(1 - ab_prev) * eps  # eta = 0
        torch.randn(SHAPE, generator=g)
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


def test_log_prob_grad_leaves_classifier_parameters_alone():
    clf = FakeClassifier()
    x = torch.randn(2, *SHAPE)
    g = log_prob_grad(clf, x, torch.tensor([10, 20]), torch.tensor([0, 2]))
    assert clf.w.grad is None
    torch.testing.assert_close(g[1:2], ref_grad(clf, x[1:2], 20, 2))


@pytest.mark.parametrize("sampler", registry.names())
def test_trajectories_are_batch_independent_and_pairs_share_noise(sampler):
    d = create_diffusion({"learn_sigma": True}, "5")
    unet, clfs = FakeUNet(), {"robust": FakeClassifier(1), "vanilla": FakeClassifier(2)}
    alone = sample(d, unet, clfs, [Trajectory(1, 42, "robust", 1.0)], SHAPE, sampler=sampler)
    batch = [Trajectory(i % NCLS, 100 + i, ("robust", "vanilla", "none")[i % 3], 0.5) for i in range(7)]
    batch.insert(4, Trajectory(1, 42, "robust", 1.0))
    together = sample(d, unet, clfs, batch, SHAPE, sampler=sampler)
    torch.testing.assert_close(together[4:5], alone, rtol=0, atol=1e-6)
    gens = [torch.Generator().manual_seed(7) for _ in range(2)]
    pair = sample(d, unet, clfs, [Trajectory(2, 7, "robust", 0.0), Trajectory(2, 7, "vanilla", 0.0)], SHAPE,
                  sampler=sampler, generators=gens)
    assert torch.equal(pair[0], pair[1])  # same seed, zero scale: identical trajectories
    # Each trajectory drew x_T and the sampler's registered number of draws per step, no more, no less.
    ref = torch.Generator().manual_seed(7)
    for _ in range(1 + d.num_timesteps * registry.get(sampler).noise_draws_per_step):
        torch.randn(SHAPE, generator=ref)
    assert all(torch.equal(g.get_state(), ref.get_state()) for g in gens)


def test_callback_sees_every_step_and_can_cancel():
    d = create_diffusion({"learn_sigma": True}, "6")
    seen = []

    def cb(step, total, x, x0):
        seen.append((step, total, tuple(x.shape), tuple(x0.shape)))
        if step == 2:
            raise SamplingCancelled()

    with pytest.raises(SamplingCancelled):
        sample(d, FakeUNet(), {}, [Trajectory(0, 1)], SHAPE, callback=cb)
    assert [s[:2] for s in seen] == [(0, 6), (1, 6), (2, 6)]
    assert seen[0][2:] == ((1, *SHAPE), (1, *SHAPE))


def test_bad_inputs_are_refused():
    d = create_diffusion({"learn_sigma": True}, "2")
    with pytest.raises(ValueError, match="no classifier loaded"):
        sample(d, FakeUNet(), {}, [Trajectory(0, 1, "robust", 1.0)], SHAPE)
    with pytest.raises(ValueError, match="seed"):
        sample(d, FakeUNet(), {}, [Trajectory(0, -1)], SHAPE)
    with pytest.raises(ValueError, match="sampler"):
        sample(d, FakeUNet(), {}, [Trajectory(0, 1)], SHAPE, sampler="heun")


def test_guided_ddim_shows_its_guided_x0_to_the_callback():
    # Issue 13: the callback got the x_0 from before the guidance shift. At t = 0 a DDIM step lands
    # exactly on its x_0, so the last x_0 shown must be the image itself.
    d = create_diffusion({"learn_sigma": True}, "ddim4")
    shown = []
    got = sample(d, FakeUNet(), {"robust": FakeClassifier()}, [Trajectory(1, 3, "robust", 1.5)], SHAPE,
                 sampler="ddim", callback=lambda step, total, x, x0: shown.append(x0.clone()))
    assert torch.equal(shown[-1], got)
    plain = []
    sample(d, FakeUNet(), {}, [Trajectory(1, 3)], SHAPE, sampler="ddim",
           callback=lambda step, total, x, x0: plain.append(x0.clone()))
    assert not torch.equal(shown[0], plain[0])  # same x_T and model output: only guidance differs


@pytest.mark.parametrize("sampler", registry.names())
def test_an_unguided_row_is_bit_identical_whether_or_not_a_guided_row_shares_its_batch(sampler):
    # Issue 13: one guided trajectory sent the whole DDIM batch down the guided path (an eps -> x_0
    # round trip), which moved the unguided rows by ~1e-6. Same batch size, same row, a real
    # (tiny, seeded) ADM UNet: the toy networks above round-trip exactly and would not show it.
    from model_core.pipeline import get_pipeline

    pipe = get_pipeline("tiny", "cpu")
    mixed = pipe.sample_trajectories([Trajectory(0, 11, "robust", 2.0), Trajectory(2, 12)], "5", sampler)
    plain = pipe.sample_trajectories([Trajectory(0, 11), Trajectory(2, 12)], "5", sampler)
    assert torch.equal(mixed[1], plain[1])
    assert not torch.equal(mixed[0], plain[0])
