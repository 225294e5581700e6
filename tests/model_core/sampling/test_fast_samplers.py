"""DPM-Solver++(2M) and SDE-DPM-Solver++(2M) against steps written out by hand from Lu et al. (2022).

The references below use float64 Python arithmetic on the toy networks of
``sampler_support``: alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda =
log(alpha / sigma), h = lambda_next - lambda; the data prediction D is ADM's
clamped x_0 with the score shift eps - sqrt(1 - abar) s g.
"""
import math

import pytest
import torch

from model_core.diffusion import create_diffusion
from model_core.sampling.loop import Trajectory, sample
from sampler_support import SHAPE, FakeClassifier, FakeUNet, ref_grad

FAST = ("dpmpp_2m", "dpmpp_2m_sde")


def levels(abar):
    alpha, sigma = math.sqrt(abar), math.sqrt(1 - abar)
    return alpha, sigma, math.log(alpha / sigma)


def reference_denoised(d, unet, clf, x, i, label, scale, clip=True):
    """D at the process's step i: clamped x_0, then eps shifted by -sqrt(1 - abar) s g and x_0 re-derived."""
    t_orig = d.timestep_map[i]
    eps = unet(x, torch.tensor([t_orig]), y=torch.tensor([label]))[:, :1]
    ab = d.alphas_cumprod[i]
    x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    if clip:
        x0 = x0.clamp(-1, 1)
    if scale:
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        eps = eps - math.sqrt(1 - ab) * scale * ref_grad(clf, x, t_orig, label)
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    return x0


def run(d, sampler, trajectory, clf=None, clip=True):
    xs, x0s = [], []
    got = sample(d, FakeUNet(), {"robust": clf or FakeClassifier()}, [trajectory], SHAPE, sampler=sampler,
                 clip_denoised=clip,
                 callback=lambda step, total, x, x0: (xs.append(x.clone()), x0s.append(x0.clone())))
    return got, xs, x0s


@pytest.mark.parametrize("scale,clip", [(0.0, False), (2.5, False), (2.5, True)])
def test_dpmpp_2m_first_two_steps_match_the_hand_written_solver(scale, clip):
    d = create_diffusion({"learn_sigma": True}, "6")
    unet, clf = FakeUNet(), FakeClassifier()
    method = "robust" if scale else "none"
    _, xs, x0s = run(d, "dpmpp_2m", Trajectory(1, 21, method, scale), clf, clip)

    g = torch.Generator().manual_seed(21)
    x = torch.randn(SHAPE, generator=g).unsqueeze(0)
    n = d.num_timesteps
    # Step 1 (index n-1 -> n-2): first order, x_1 = (sigma_1 / sigma_0) x - alpha_1 (e^-h - 1) D_0.
    a0, s0, l0 = levels(d.alphas_cumprod[n - 1])
    a1, s1, l1 = levels(d.alphas_cumprod[n - 2])
    d0 = reference_denoised(d, unet, clf, x, n - 1, 1, scale, clip)
    h1 = l1 - l0
    x1 = (s1 / s0) * x - a1 * math.expm1(-h1) * d0
    torch.testing.assert_close(x0s[0], d0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xs[0], x1, rtol=1e-5, atol=1e-5)
    # Step 2: the multistep correction D' = (1 + 1/(2r)) D_1 - 1/(2r) D_0, r = h_1 / h_2.
    a2, s2, l2 = levels(d.alphas_cumprod[n - 3])
    d1 = reference_denoised(d, unet, clf, xs[0], n - 2, 1, scale, clip)
    h2 = l2 - l1
    r = h1 / h2
    corrected = (1 + 1 / (2 * r)) * d1 - (1 / (2 * r)) * d0
    x2 = (s2 / s1) * xs[0] - a2 * math.expm1(-h2) * corrected
    torch.testing.assert_close(xs[1], x2, rtol=1e-5, atol=1e-5)
    if not clip:  # (clamped, the toy x_0 is +-1 at both steps and the correction vanishes)
        assert (xs[1] - ((s2 / s1) * xs[0] - a2 * math.expm1(-h2) * d1)).abs().max() > 1e-3  # the correction counts


def test_dpmpp_2m_sde_first_two_steps_match_the_hand_written_solver():
    d = create_diffusion({"learn_sigma": True}, "6")
    unet, clf = FakeUNet(), FakeClassifier()
    gens = [torch.Generator().manual_seed(8)]
    xs = []
    sample(d, unet, {"robust": clf}, [Trajectory(2, 8, "robust", 1.5)], SHAPE, sampler="dpmpp_2m_sde",
           generators=gens, clip_denoised=False, callback=lambda step, total, x, x0: xs.append(x.clone()))

    g = torch.Generator().manual_seed(8)
    x = torch.randn(SHAPE, generator=g).unsqueeze(0)
    n = d.num_timesteps
    a0, s0, l0 = levels(d.alphas_cumprod[n - 1])
    a1, s1, l1 = levels(d.alphas_cumprod[n - 2])
    a2, s2, l2 = levels(d.alphas_cumprod[n - 3])
    d0 = reference_denoised(d, unet, clf, x, n - 1, 2, 1.5, clip=False)
    h1 = l1 - l0
    z1 = torch.randn(SHAPE, generator=g).unsqueeze(0)  # one draw per step, after x_T
    x1 = (s1 / s0) * math.exp(-h1) * x + a1 * (1 - math.exp(-2 * h1)) * d0 + s1 * math.sqrt(1 - math.exp(-2 * h1)) * z1
    torch.testing.assert_close(xs[0], x1, rtol=1e-5, atol=1e-5)
    d1 = reference_denoised(d, unet, clf, xs[0], n - 2, 2, 1.5, clip=False)
    assert (d1 - d0).abs().max() > 1e-2  # so the correction term is exercised
    h2 = l2 - l1
    corrected = d1 + (h2 / (2 * h1)) * (d1 - d0)
    z2 = torch.randn(SHAPE, generator=g).unsqueeze(0)
    x2 = (s2 / s1) * math.exp(-h2) * xs[0] + a2 * (1 - math.exp(-2 * h2)) * corrected \
        + s2 * math.sqrt(1 - math.exp(-2 * h2)) * z2
    torch.testing.assert_close(xs[1], x2, rtol=1e-5, atol=1e-5)
    for _ in range(n - 2):
        torch.randn(SHAPE, generator=g)
    assert torch.equal(gens[0].get_state(), g.get_state())  # x_T + one draw per step, the last included


@pytest.mark.parametrize("sampler", FAST + ("ddim",))
def test_guided_and_unguided_differ_by_exactly_the_score_shift(sampler):
    # Same x_T, same noise: the first step's x_0 moves by (1 - abar) / sqrt(abar) * s * g(x_T, t), which is
    # sigma / alpha times the shift -sigma s g of the noise prediction, and nothing else.
    d = create_diffusion({"learn_sigma": True}, "5")
    clf = FakeClassifier()
    scale = 3.0
    _, xs_g, x0_g = run(d, sampler, Trajectory(0, 4, "robust", scale), clf)
    _, xs_u, x0_u = run(d, sampler, Trajectory(0, 4, "none", 0.0), clf)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4)).unsqueeze(0)
    n = d.num_timesteps
    ab = d.alphas_cumprod[n - 1]
    shift = (1 - ab) / math.sqrt(ab) * scale * ref_grad(clf, x_T, d.timestep_map[n - 1], 0)
    assert shift.abs().max() > 1e-3
    torch.testing.assert_close(x0_g[0] - x0_u[0], shift, rtol=1e-5, atol=1e-5)
    # The step moves x by the data-prediction coefficient times that shift (the noise cancels).
    a1, s1, l1 = levels(d.alphas_cumprod[n - 2])
    _, _, l0 = levels(ab)
    h = l1 - l0
    c_d = {"dpmpp_2m": -a1 * math.expm1(-h), "dpmpp_2m_sde": a1 * (1 - math.exp(-2 * h)),
           "ddim": a1 - s1 * math.sqrt(ab) / math.sqrt(1 - ab)}[sampler]
    torch.testing.assert_close(xs_g[0] - xs_u[0], c_d * shift, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", FAST)
def test_the_last_step_lands_on_its_guided_x0(sampler):
    d = create_diffusion({"learn_sigma": True}, "4")
    got, xs, x0s = run(d, sampler, Trajectory(1, 3, "robust", 1.5))
    assert torch.equal(got, x0s[-1]) and torch.equal(got, xs[-1])


def test_dpmpp_2m_first_step_is_ddim():
    # DPM-Solver++'s first-order update is DDIM (eta 0), the same formula written in log-SNR.
    d = create_diffusion({"learn_sigma": True}, "5")
    _, xs_dpm, _ = run(d, "dpmpp_2m", Trajectory(2, 9, "robust", 2.0))
    _, xs_ddim, _ = run(d, "ddim", Trajectory(2, 9, "robust", 2.0))
    torch.testing.assert_close(xs_dpm[0], xs_ddim[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(xs_dpm[1], xs_ddim[1], rtol=1e-5, atol=1e-5)


class SmoothUNet(torch.nn.Module):
    """A smooth eps(x, t) with a fixed variance output (the samplers here ignore it)."""

    def forward(self, x, t, y=None):
        tt = t.float().view(-1, 1, 1, 1) / 1000
        eps = 0.5 * torch.tanh(x) * (1 + tt) + 0.1 * torch.sin(3 * x) + 0.02 * y.float().view(-1, 1, 1, 1)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)


@pytest.mark.parametrize("scale,tolerance", [(0.0, 2e-3), (1.0, 1e-2)])
def test_at_1000_steps_dpmpp_2m_agrees_with_ddim(scale, tolerance):
    # Both integrate the same probability-flow ODE (DDIM is its first-order solver); at 1000 steps they
    # differ by O(h). Measured max |diff| over 3 images: 6.4e-4 unguided, 5.1e-3 at scale 1 (the guided
    # field is steeper: the shift of x_0 is (1 - abar) / sqrt(abar) s g), against 2.1e-2 and 0.81 for
    # 20 DPM-Solver++ steps. Stated tolerances: 2e-3 unguided, 1e-2 guided.
    d = create_diffusion({"learn_sigma": True}, "1000")
    d20 = create_diffusion({"learn_sigma": True}, "20")
    unet, clfs = SmoothUNet(), {"robust": FakeClassifier(3)}
    trs = [Trajectory(y, 50 + y, "robust" if scale else "none", scale) for y in range(3)]
    ddim = sample(d, unet, clfs, trs, SHAPE, sampler="ddim")
    dpm = sample(d, unet, clfs, trs, SHAPE, sampler="dpmpp_2m")
    far = sample(d20, unet, clfs, trs, SHAPE, sampler="dpmpp_2m")
    assert (dpm - ddim).abs().max() < tolerance
    assert (far - ddim).abs().max() > 10 * (dpm - ddim).abs().max()  # the tolerance is far from trivial
