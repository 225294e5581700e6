"""Evaluation attacks on clean images: radii in [0, 1] units, the eps-ball, the pixel range, EOT, AutoAttack's mapping."""
import pytest
import torch

from model_core.robustness.autoattack_adapter import UnitInterval
from model_core.robustness.image_attacks import fgsm, input_gradient, pgd
from model_core.robustness.report import binomial_interval
from model_core.robustness.threats import ATTACKS, model_eps, parse_attacks
from model_core.errors import SettingError


def _linear(seed=0, classes=4, size=6):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size * size, classes)).eval()


def _data(n=16, size=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g) * 2 - 1, torch.randint(0, 4, (n,), generator=g)


def test_units_convention():
    assert model_eps(0.05) == pytest.approx(0.1)
    assert ATTACKS["pgd"].eps == 0.05 and ATTACKS["pgd"].steps == 40 and ATTACKS["pgd"].norm == "linf"
    assert [a.name for a in parse_attacks("fgsm, pgd,fgsm")] == ["fgsm", "pgd"]
    with pytest.raises(SettingError):
        parse_attacks("pgd,cw")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_respects_eps_and_range_and_raises_loss(norm):
    model = _linear()
    x, y = _data()
    eps = 0.3 if norm == "linf" else 1.5
    adv = pgd(model, x, y, norm=norm, eps=eps, steps=10, seed=0)
    d = (adv - x).flatten(1)
    r = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (r <= eps + 1e-5).all()
    assert adv.min() >= -1 and adv.max() <= 1
    ce = torch.nn.functional.cross_entropy
    assert ce(model(adv), y) > ce(model(x), y)
    assert torch.equal(adv, pgd(model, x, y, norm=norm, eps=eps, steps=10, seed=0))   # seeded


def test_fgsm_is_one_signed_step():
    model = _linear()
    x, y = _data()
    x = x.clamp(-0.8, 0.8)
    adv = fgsm(model, x, y, eps=0.1)
    g = input_gradient(model, x, y)
    assert torch.allclose(adv - x, 0.1 * g.sign(), atol=1e-6)


def test_eot_averages_gradients_over_draws():
    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = _linear()
            self.gen = torch.Generator().manual_seed(0)

        def forward(self, x):
            return self.lin(x * (1 + torch.randn(x.shape, generator=self.gen)))

    x, y = _data(4)
    g1 = input_gradient(Noisy(), x, y, eot=1)
    g50 = input_gradient(Noisy(), x, y, eot=50)
    clean = input_gradient(_linear(), x, y)
    # the average over many draws is closer to the noiseless gradient than one draw
    assert (g50 - clean).norm() < (g1 - clean).norm()


def test_autoattack_sees_unit_interval_images():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((float(x.min()), float(x.max())))
            return x.flatten(1)[:, :3]

    x01 = torch.tensor([[0.0, 0.5, 1.0]]).view(1, 1, 1, 3)
    UnitInterval(Probe())(x01)
    assert seen[-1] == (-1.0, 1.0)   # [0, 1] in, the model's [-1, 1] out


def test_autoattack_adapter_maps_units_and_respects_eps():
    pytest.importorskip("pyautoattack")
    from model_core.robustness.autoattack_adapter import autoattack

    model = _linear()
    x, y = _data(8)
    with torch.no_grad():
        y = model(x).argmax(1)           # all correct, so every point is attacked
    adv = autoattack(model, x, y, norm="linf", eps01=0.3, seed=0, batch_size=8)
    # eps 0.3 in [0, 1] units is 0.6 in the model's [-1, 1] units
    assert (adv - x).abs().amax() <= 0.6 + 1e-5
    assert adv.min() >= -1 and adv.max() <= 1
    assert not torch.equal(adv, x)
    with torch.no_grad():
        assert (model(adv).argmax(1) != y).any()


def test_binomial_interval():
    lo, hi = binomial_interval(50, 100)
    assert lo == pytest.approx(0.3983, abs=1e-3) and hi == pytest.approx(0.6017, abs=1e-3)
    assert binomial_interval(0, 10)[0] == 0.0 and binomial_interval(10, 10)[1] == 1.0


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.4)])
def test_one_step_attacks_respect_their_eps_in_both_norms(norm, eps):
    model = _linear()
    x, y = _data()
    x = x.clamp(-0.5, 0.5)            # eps < 0.5 from the pixel range: clipping cannot shorten the step
    adv = fgsm(model, x, y, eps=eps, norm=norm)
    d = (adv - x).flatten(1)
    r = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    # one step to the edge of the ball: exactly eps (a non-zero gradient), never more
    assert torch.allclose(r, torch.full_like(r, eps), atol=1e-5)
    g = input_gradient(model, x, y).flatten(1)
    if norm == "l2":                  # along the gradient, not its sign
        assert torch.allclose(d, eps * g / g.norm(dim=1, keepdim=True), atol=1e-5)
    ce = torch.nn.functional.cross_entropy
    assert ce(model(adv), y) > ce(model(x), y)
    with pytest.raises(ValueError):
        fgsm(model, x, y, eps=eps, norm="l1")


def test_every_threat_model_has_a_one_step_and_an_iterative_attack_at_one_radius():
    from model_core.robustness.threats import NORMS, SANITY_EPS, one_step_of

    for norm in NORMS:
        pgds = [a for a in ATTACKS.values() if a.kind == "pgd" and a.norm == norm]
        assert pgds and all(one_step_of(a) is not None and one_step_of(a).eps == a.eps for a in pgds)
        assert any(a.kind == "autoattack" and a.norm == norm for a in ATTACKS.values())
        assert len(SANITY_EPS[norm]) >= 2
    # L2 radius: the demo robust classifier's training radius (2.0 in [-1, 1] units)
    assert model_eps(ATTACKS["pgd-l2"].eps) == 2.0 and ATTACKS["fgm-l2"].norm == "l2"


def test_l2_autoattack_adapter_runs_and_respects_eps():
    pytest.importorskip("pyautoattack")
    from model_core.robustness.autoattack_adapter import autoattack

    model = _linear()
    x, y = _data(8)
    with torch.no_grad():
        y = model(x).argmax(1)
    adv = autoattack(model, x, y, norm="l2", eps01=1.0, seed=0, batch_size=8)
    # L2 1.0 in [0, 1] units is 2.0 in the model's units
    assert ((adv - x).flatten(1).norm(dim=1) <= 2.0 + 1e-4).all()
    assert adv.min() >= -1 and adv.max() <= 1
    with torch.no_grad():
        assert (model(adv).argmax(1) != y).any()
