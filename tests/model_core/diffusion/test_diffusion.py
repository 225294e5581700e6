"""Schedules, forward process, posterior, learned variance, respacing, hybrid loss."""
import math

import numpy as np
import pytest
import torch

from model_core.diffusion import GaussianDiffusion, create_diffusion, get_named_beta_schedule
from model_core.steps import parse_steps, space_timesteps


def test_linear_schedule_endpoints_and_cosine_shape():
    b = get_named_beta_schedule("linear", 1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and len(b) == 1000
    c = get_named_beta_schedule("cosine", 1000)
    assert (np.diff(c) >= -1e-12).all() and c.max() <= 0.999
    abar = np.cumprod(1 - c)
    ref = np.cos((np.arange(1, 1001) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(abar[:-50], ref[:-50], rtol=1e-6)
    with pytest.raises(ValueError, match="noise_schedule"):
        get_named_beta_schedule("quadratic", 10)


def test_q_sample_matches_closed_form():
    d = create_diffusion({"learn_sigma": False})
    x0 = torch.randn(3, 1, 4, 4)
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 500, 999])
    abar = np.cumprod(1 - get_named_beta_schedule("linear", 1000))[[0, 500, 999]]
    want = torch.from_numpy(np.sqrt(abar)).float().view(3, 1, 1, 1) * x0 + torch.from_numpy(np.sqrt(1 - abar)).float().view(3, 1, 1, 1) * eps
    torch.testing.assert_close(d.q_sample(x0, t, eps), want)


def test_posterior_is_the_gaussian_posterior():
    d = create_diffusion({"learn_sigma": False})
    t = 300
    abar, abar_prev, beta = d.alphas_cumprod[t], d.alphas_cumprod[t - 1], d.betas[t]
    x0, xt = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    mean, var, logvar = d.q_posterior_mean_variance(x0, xt, torch.tensor([t]))
    # Bayes on N(x_t; sqrt(alpha_t) x_{t-1}, beta_t) x N(x_{t-1}; sqrt(abar_prev) x0, 1 - abar_prev)
    prec = (1 - beta) / beta + 1 / (1 - abar_prev)
    want_mean = (math.sqrt(1 - beta) / beta * xt + math.sqrt(abar_prev) / (1 - abar_prev) * x0) / prec
    torch.testing.assert_close(mean, want_mean.float(), rtol=1e-5, atol=1e-6)
    assert var.item() == pytest.approx(1 / prec, rel=1e-6)
    assert logvar.item() == pytest.approx(math.log(1 / prec), rel=1e-6)
    # At t=0 the posterior variance is 0; its log is clipped to the t=1 value.
    assert d.posterior_variance[0] == 0 and d.posterior_log_variance_clipped[0] == math.log(d.posterior_variance[1])
    del abar


def test_learned_range_interpolates_between_posterior_and_beta():
    d = create_diffusion({"learn_sigma": True})
    t = torch.tensor([10, 10, 10])
    v = torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    var, logvar = d.variance_from_output(v, t, (3, 1, 2, 2))
    assert logvar[0].flatten()[0].item() == pytest.approx(math.log(d.betas[10]), rel=1e-6)
    assert logvar[1].flatten()[0].item() == pytest.approx(d.posterior_log_variance_clipped[10], rel=1e-6)
    mid = 0.5 * math.log(d.betas[10]) + 0.5 * d.posterior_log_variance_clipped[10]
    assert logvar[2].flatten()[0].item() == pytest.approx(mid, rel=1e-6)
    torch.testing.assert_close(var, logvar.exp())


def test_output_channel_count_is_checked():
    d = create_diffusion({"learn_sigma": True})
    with pytest.raises(ValueError, match="learned-variance model must output 6 channels, got 3"):
        d.split_model_output(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))


def test_space_timesteps_matches_adm_semantics():
    kept = space_timesteps(1000, "250")
    assert len(kept) == 250 and kept[:3] == [0, 4, 8] and kept[-3:] == [991, 995, 999]
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    sections = space_timesteps(300, "10,15,20")
    assert len(sections) == 45 and sections[0] == 0 and sections[9] == 99 and sections[10] == 100 and sections[-1] == 299
    assert space_timesteps(1000, "1000") == list(range(1000))


@pytest.mark.parametrize("bad", ["ddim0", "abc", 0, -3, 1001, "ddim999", "", True, 2.5, "5,2000", "logsnr0",
                                 "logsnr", "logsnr1001", "logsnrx"])
def test_parse_steps_rejects_bad_specs(bad):
    with pytest.raises(ValueError, match="steps"):
        parse_steps(bad)


def test_parse_steps_sampler_rules():
    assert parse_steps("ddim50").sampler == "ddim"
    assert parse_steps(100).sampler == "ddpm" and parse_steps(100, "ddim").sampler == "ddim"
    with pytest.raises(ValueError, match="DDIM spacing but sampler is 'ddpm'"):
        parse_steps("ddim50", "ddpm")
    with pytest.raises(ValueError, match="sampler"):
        parse_steps("50", "euler")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_logsnr_spacing_is_uniform_in_log_snr_on_training_indices(schedule):
    abar = create_diffusion({"noise_schedule": schedule}).alphas_cumprod
    lam = 0.5 * np.log(abar / (1 - abar))
    kept = space_timesteps(1000, "logsnr10", noise_schedule=schedule)
    assert kept[0] == 0 and kept[-1] == 999 and len(set(kept)) == 10 == len(kept)
    assert all(isinstance(k, int) for k in kept)  # training indices: the networks never see a fraction
    targets = np.linspace(lam[999], lam[0], 10)[::-1]  # in index order
    nearest = [int(np.abs(lam - target).argmin()) for target in targets]
    if len(set(nearest)) == 10:  # each is the index whose log-SNR is nearest its target
        assert kept == nearest
    else:  # the cosine schedule's clipped last betas crowd targets onto its last indices: moved to free ones
        assert schedule == "cosine" and kept[:7] == nearest[:7] and nearest[-3:] == [998, 999, 999]
        assert kept[-3:] == [997, 998, 999]
    # Uniform in t it is not: the linear schedule's log-SNR falls fastest near t = 0, so steps crowd there.
    assert parse_steps("logsnr10").timesteps != parse_steps("10").timesteps
    assert parse_steps("logsnr10", noise_schedule=schedule).timesteps == tuple(kept)


def test_logsnr_spacing_keeps_every_count_distinct():
    # At many steps several targets share an index near t = 0; they move to the next free index.
    for count in (25, 30, 100, 999, 1000):
        kept = space_timesteps(1000, f"logsnr{count}")
        assert len(kept) == count and kept == sorted(set(kept)) and kept[0] == 0 and kept[-1] == 999
    assert space_timesteps(1000, "logsnr1000") == list(range(1000))
    assert parse_steps("logsnr20", "dpmpp_2m").sampler == "dpmpp_2m"


@pytest.mark.parametrize("spec", ["250", "ddim25", "10,15,20", "logsnr20"])
def test_respacing_keeps_alpha_bar_at_kept_steps(spec):
    base = create_diffusion({"learn_sigma": True})
    d = create_diffusion({"learn_sigma": True}, spec)
    np.testing.assert_allclose(d.alphas_cumprod, base.alphas_cumprod[d.timestep_map], rtol=1e-12)
    t = torch.arange(d.num_timesteps)
    assert d.model_timesteps(t).tolist() == d.timestep_map


def test_hybrid_loss_trains_variance_only_through_vb():
    d = create_diffusion({"learn_sigma": True})
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    out = torch.zeros(4, 2, 4, 4, requires_grad=True)
    losses = d.training_losses(lambda x, t, **kw: out * 1, x0, torch.tensor([0, 1, 500, 999]))
    assert set(losses) == {"loss", "mse", "vb"}
    (g_vb,) = torch.autograd.grad(losses["vb"].sum(), out, retain_graph=True)
    assert g_vb[:, :1].abs().max() == 0 and g_vb[:, 1:].abs().max() > 0
    (g_mse,) = torch.autograd.grad(losses["mse"].sum(), out)
    assert g_mse[:, 1:].abs().max() == 0
    fixed = GaussianDiffusion(get_named_beta_schedule("linear", 1000), model_var_type="fixed_small")
    assert set(fixed.training_losses(lambda x, t, **kw: torch.zeros_like(x), x0, torch.tensor([1, 2, 3, 4]))) == {"loss", "mse"}


def test_training_losses_pass_original_timesteps():
    seen = []
    d = create_diffusion({"learn_sigma": False}, "ddim25")

    def model(x, t, **kw):
        seen.extend(t.tolist())
        return torch.zeros_like(x)

    d.training_losses(model, torch.zeros(2, 1, 2, 2), torch.tensor([24, 1]))
    assert seen == [960, 40]
