"""PGD on noisy inputs: the eps-ball, per-sample early stopping, loss ascent, no parameter gradients."""
import pytest
import torch
import torch.nn.functional as F

from model_core.robustness.attacks import AttackResult, eval_mode, pgd_targeted, pgd_untargeted, project


class TinyTimeClassifier(torch.nn.Module):
    """classifier(x_t, t): a linear map of the image plus a timestep embedding, with dropout.

    Dropout makes train and eval mode differ, so the tests can see which mode
    the attack used.
    """

    def __init__(self, channels=1, size=8, classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = torch.nn.Linear(channels * size * size, classes)
        self.temb = torch.nn.Embedding(1000, classes)
        self.drop = torch.nn.Dropout(0.5)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(self.lin.weight.shape, generator=g) * 0.3)
            self.lin.bias.zero_()
            self.temb.weight.copy_(torch.randn(self.temb.weight.shape, generator=g) * 0.1)
        self.modes_seen = []

    def forward(self, x, t):
        self.modes_seen.append(self.training)
        return self.lin(self.drop(x.flatten(1))) + self.temb(t)


def _batch(n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    return x, t


def _correct_labels(model, x, t):
    with torch.no_grad(), eval_mode(model):
        return model(x, t).argmax(-1)


@pytest.mark.parametrize("norm,eps,step", [("l2", 0.5, 0.083), ("l2", 3.0, 1.0), ("linf", 0.05, 0.01),
                                           ("linf", 0.3, 0.2)])
def test_attack_never_leaves_the_eps_ball(norm, eps, step):
    model = TinyTimeClassifier()
    x, t = _batch()
    y = _correct_labels(model, x, t)
    res = pgd_untargeted(model, x, t, y, norm=norm, eps=eps, step_size=step, steps=20, early_stop=False)
    delta = (res.x_adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-5)).all(), size.max()
    # With large steps and no early stop the attack does reach the boundary.
    assert size.max() > 0.9 * eps


def test_projection_is_the_nearest_point_of_the_ball():
    x = torch.zeros(2, 1, 2, 2)
    far = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    out = project(far, x, "l2", 1.0).flatten(1)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8, 0.0, 0.0]))
    assert torch.allclose(out[1], far.flatten(1)[1])  # already inside: unchanged
    out = project(far, x, "linf", 0.5).flatten(1)
    assert torch.allclose(out[0], torch.tensor([0.5, 0.5, 0.0, 0.0]))


def test_already_misclassified_samples_are_left_alone_and_counted_as_stopped():
    model = TinyTimeClassifier()
    x, t = _batch()
    pred = _correct_labels(model, x, t)
    y = pred.clone()
    y[::2] = (pred[::2] + 1) % 3  # even samples start misclassified
    res = pgd_untargeted(model, x, t, y, norm="l2", eps=0.5, step_size=0.083, steps=7)
    assert torch.equal(res.x_adv[::2], x[::2])
    assert (res.steps_used[::2] == 0).all()
    assert res.stopped_early[::2].all()
    assert not res.clean_correct[::2].any() and res.clean_correct[1::2].all()
    assert (res.steps_used[1::2] > 0).all()


def test_early_stopping_is_per_sample_and_stops_exactly_when_fooled():
    model = TinyTimeClassifier()
    x, t = _batch(64)
    y = _correct_labels(model, x, t)
    eps, step = 2.0, 0.25
    res = pgd_untargeted(model, x, t, y, norm="l2", eps=eps, step_size=step, steps=7)
    used = res.steps_used
    # Some samples fall at different steps, some survive all seven.
    assert len(set(used.tolist())) >= 3, used.tolist()
    with torch.no_grad(), eval_mode(model):
        for i in range(len(x)):
            k = int(used[i])
            # Replay sample i alone for k-1 steps: it must still be correct then (else it would have stopped).
            if k >= 1:
                prev = pgd_untargeted(model, x[i:i + 1], t[i:i + 1], y[i:i + 1], norm="l2", eps=eps,
                                      step_size=step, steps=k - 1, early_stop=False)
                assert model(prev.x_adv, t[i:i + 1]).argmax(-1).item() == y[i].item()
            if k < 7:
                assert res.fooled[i] and res.stopped_early[i]
                assert model(res.x_adv[i:i + 1], t[i:i + 1]).argmax(-1).item() != y[i].item()
            else:
                assert not res.stopped_early[i]


def test_loop_ends_when_every_sample_is_fooled():
    model = TinyTimeClassifier()
    x, t = _batch(16)
    y = _correct_labels(model, x, t)
    model.modes_seen.clear()
    res = pgd_untargeted(model, x, t, y, norm="l2", eps=50.0, step_size=25.0, steps=40)
    assert res.fooled.all()
    assert int(res.steps_used.max()) < 40
    # One clean forward, then a gradient forward and a re-check per step actually taken.
    assert len(model.modes_seen) == 1 + 2 * int(res.steps_used.max())


@pytest.mark.parametrize("norm,eps,step", [("l2", 0.5, 0.083), ("linf", 0.05, 0.01)])
def test_attack_increases_the_loss_of_every_attacked_sample(norm, eps, step):
    model = TinyTimeClassifier()
    x, t = _batch(64)
    y = _correct_labels(model, x, t)
    res = pgd_untargeted(model, x, t, y, norm=norm, eps=eps, step_size=step, steps=7)
    with torch.no_grad(), eval_mode(model):
        before = F.cross_entropy(model(x, t), y, reduction="none")
        after = F.cross_entropy(model(res.x_adv, t), y, reduction="none")
    attacked = res.steps_used > 0
    assert attacked.all()
    assert (after[attacked] > before[attacked]).all()


def test_attack_leaves_parameter_gradients_and_mode_untouched():
    model = TinyTimeClassifier()
    x, t = _batch()
    y = _correct_labels(model, x, t)
    # Existing gradients (mid-accumulation) must survive the attack unchanged...
    model.train()
    F.cross_entropy(model(x, t), y).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.modes_seen.clear()
    pgd_untargeted(model, x, t, y, norm="l2", eps=0.5, step_size=0.083, steps=7)
    pgd_targeted(model, x, t, (y + 1) % 3, eps=10.0, steps=3)
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, before[n]), n
    # ...and the attack ran in eval mode, then put the model back in train mode.
    assert model.modes_seen and not any(model.modes_seen)
    assert model.training and model.drop.training
    # ...and no gradient appears on a model that had none.
    fresh = TinyTimeClassifier().eval()
    pgd_untargeted(fresh, x, t, y, norm="linf", eps=0.1, step_size=0.02, steps=5)
    assert all(p.grad is None for p in fresh.parameters())
    assert not fresh.training


def test_targeted_attack_maximises_the_target_class():
    model = TinyTimeClassifier()
    x, t = _batch(16)
    x = x.clamp(-1, 1)
    targets = (_correct_labels(model, x, t) + 1) % 3
    res = pgd_targeted(model, x, t, targets, norm="l2", eps=100.0, steps=7)
    assert isinstance(res, AttackResult)
    assert res.fooled.all()  # every image now predicted as its target class
    assert res.x_adv.min() >= -1 and res.x_adv.max() <= 1
    with torch.no_grad(), eval_mode(model):
        before = F.log_softmax(model(x, t), -1).gather(1, targets[:, None])
        after = F.log_softmax(model(res.x_adv, t), -1).gather(1, targets[:, None])
    assert (after > before).all()


@pytest.mark.parametrize("kwargs,msg", [({"norm": "l1"}, "norm"), ({"eps": -1}, "eps"),
                                        ({"step_size": 0}, "step size"), ({"steps": 1.5}, "steps")])
def test_bad_attack_settings_are_rejected(kwargs, msg):
    model = TinyTimeClassifier()
    x, t = _batch(4)
    with pytest.raises(ValueError, match=msg):
        pgd_untargeted(model, x, t, torch.zeros(4, dtype=torch.long), **kwargs)
