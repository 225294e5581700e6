"""Training loops on tiny data: exact resume, loss goes down, logs, run metadata, schedule, EMA."""
import json

import numpy as np
import pytest
import torch

from model_core.data import ImageDataset
from model_core.diffusion.buckets import bucket_edges
from model_core.robustness.evaluate import evaluate_classifier
from model_core.training.classifier import ClassifierTrainConfig, train_classifier
from model_core.training.diffusion import DiffusionTrainConfig, train_diffusion
from model_core.training.loop import EMA, RunConfigMismatch, linear_lr, step_generator

TINY_CLASSIFIER = {
    "image_size": 8, "in_channels": 1, "num_classes": 2, "classifier_width": 32, "classifier_depth": 1,
    "channel_mult": "1,2", "classifier_attention_resolutions": "4", "num_head_channels": 32,
    "classifier_use_scale_shift_norm": True, "classifier_resblock_updown": True, "classifier_pool": "attention",
    "classifier_use_fp16": False,
}
TINY_UNET = {
    "image_size": 8, "in_channels": 1, "num_classes": 2, "num_channels": 32, "num_res_blocks": 1,
    "channel_mult": "1,2", "learn_sigma": True, "class_cond": True, "attention_resolutions": "4", "num_heads": 2,
    "num_head_channels": -1, "num_heads_upsample": -1, "use_scale_shift_norm": True, "dropout": 0.1,
    "resblock_updown": True, "use_fp16": False, "use_new_attention_order": False,
}
# A short schedule keeps x_t recognisable for most t, so a few steps can learn something.
PROCESS = {"diffusion_steps": 100, "noise_schedule": "linear"}


def tiny_data(n=64, seed=0) -> ImageDataset:
    """Two classes: a bright square top-left (0) or bottom-right (1) on a dark background."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.full((n, 1, 8, 8), -1.0)
    x[labels == 0, :, 1:4, 1:4] = 1.0
    x[labels == 1, :, 4:7, 4:7] = 1.0
    x = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return ImageDataset(x, labels, ("tl", "br"), "tiny-squares")


def clf_cfg(**kw):
    base = dict(model=TINY_CLASSIFIER, data="tiny", process=PROCESS, batch_size=16, total_steps=6,
                lr_start=1e-3, lr_end=2e-4, weight_decay=0.05, seed=3, ckpt_every=100)
    base.update(kw)
    return ClassifierTrainConfig(**base)


def state_of(run):
    # weights_only=True: a state holds tensors and plain data only (issue 11), so this must load.
    return torch.load(run / "state.pt", map_location="cpu", weights_only=True)


def assert_same_state(a, b, exact=True):
    for key in a["model"]:
        if exact:
            assert torch.equal(a["model"][key], b["model"][key]), key
        else:
            torch.testing.assert_close(a["model"][key], b["model"][key])
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    for pid in opt_a:
        for k in opt_a[pid]:
            assert torch.equal(opt_a[pid][k], opt_b[pid][k]), (pid, k)
    assert a["step"] == b["step"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_linear_lr_anneals_from_start_to_end():
    assert linear_lr(0, 240_000, 3e-4, 6e-5) == 3e-4
    assert linear_lr(239_999, 240_000, 3e-4, 6e-5) == pytest.approx(6e-5)
    assert linear_lr(120_000, 240_001, 3e-4, 6e-5) == pytest.approx(1.8e-4)
    assert linear_lr(5, 1, 1.0, 0.5) == 1.0


def test_ema_is_a_moving_average():
    m = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, 0.9)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)
    ema.update(m)
    # 0 -> 0.1 -> 0.19
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.19))


def test_ema_warmup_forgets_the_initial_weights():
    m = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    plain, warm = EMA(m, 0.999), EMA(m, 0.999, warmup=True)
    assert warm.decay_at(0) == pytest.approx(0.1) and warm.decay_at(990) == pytest.approx(0.991)
    assert warm.decay_at(10**6) == 0.999 and plain.decay_at(0) == 0.999
    with torch.no_grad():
        m.weight.fill_(1.0)
    for step in range(100):
        plain.update(m, step)
        warm.update(m, step)
    # Without warm-up 0.999**100 of the zeros remain; with it the product of (1+n)/(10+n), n < 100, = 9! 100!/109! ~ 1e-13.
    assert plain.shadow["weight"][0, 0].item() == pytest.approx(1 - 0.999**100)
    assert warm.shadow["weight"][0, 0].item() == pytest.approx(1.0, abs=1e-9)


def test_kept_snapshots_hold_each_checkpoints_weights(tmp_path):
    ds = tiny_data()
    run = tmp_path / "run"
    train_classifier(clf_cfg(total_steps=4, ckpt_every=1, keep_every=2, ema_decay=0.9, ema_warmup=True), run,
                     progress=False, dataset=ds, stop_at=2)
    train_classifier(clf_cfg(total_steps=4, ckpt_every=1, keep_every=2, ema_decay=0.9, ema_warmup=True), run,
                     progress=False, dataset=ds)
    kept = sorted(p.name for p in (run / "snapshots").iterdir())
    assert kept == ["step-000002", "step-000004"]
    for name in ("model.pt", "ema.pt"):
        assert (run / "snapshots" / "step-000002" / name).is_file()
        assert (run / "snapshots" / "step-000004" / name).read_bytes() == (run / name).read_bytes()
    assert (run / "snapshots" / "step-000002" / "model.pt").read_bytes() != (run / "model.pt").read_bytes()
    with pytest.raises(Exception, match="keep_every"):
        train_classifier(clf_cfg(keep_every=-1), tmp_path / "bad", progress=False, dataset=ds)


def test_step_generators_depend_only_on_seed_step_and_stream():
    a = torch.rand(3, generator=step_generator(1, 7, "noise"))
    assert torch.equal(a, torch.rand(3, generator=step_generator(1, 7, "noise")))
    for other in (step_generator(1, 8, "noise"), step_generator(2, 7, "noise"), step_generator(1, 7, "timesteps")):
        assert not torch.equal(a, torch.rand(3, generator=other))


def test_bucket_edges_cover_all_timesteps():
    assert bucket_edges(1000, 4) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert bucket_edges(100, 3) == [(0, 33), (33, 67), (67, 100)]


@pytest.mark.slow
@pytest.mark.parametrize("robust", [False, True])
def test_resumed_classifier_run_equals_uninterrupted_run(tmp_path, robust):
    ds = tiny_data()
    cfg = clf_cfg(robust=robust, eps=0.5, step_size=0.2, attack_steps=3)
    train_classifier(cfg, tmp_path / "whole", progress=False, dataset=ds)
    first = train_classifier(cfg, tmp_path / "split", progress=False, dataset=ds, stop_at=3)
    assert not first.finished and first.step == 3
    assert state_of(tmp_path / "split")["step"] == 3
    # Something else uses the global RNG between sessions; the resume must not care.
    torch.rand(100)
    second = train_classifier(cfg, tmp_path / "split", progress=False, dataset=ds)
    assert second.finished and second.step == 6
    # CPU kernels are deterministic for a fixed thread count and shapes, so equality is exact.
    assert_same_state(state_of(tmp_path / "whole"), state_of(tmp_path / "split"))
    whole, split = metrics(tmp_path / "whole"), metrics(tmp_path / "split")
    assert [r["step"] for r in split] == list(range(6))
    assert whole == split
    info = json.loads((tmp_path / "split" / "run.json").read_text())
    assert info["resumed_at_steps"] == [3] and info["finished"] and info["step"] == 6


def test_robust_run_logs_attack_statistics_per_bucket(tmp_path):
    cfg = clf_cfg(robust=True, eps=0.5, step_size=0.2, attack_steps=3, total_steps=2)
    train_classifier(cfg, tmp_path / "run", progress=False, dataset=tiny_data())
    rec = metrics(tmp_path / "run")[0]
    for key in ("loss", "clean_acc", "adv_acc", "stopped_early", "attack_steps", "lr"):
        assert key in rec, key
    assert 0 <= rec["attack_steps"] <= 3 and 0 <= rec["stopped_early"] <= 1
    assert rec["adv_acc"] <= rec["clean_acc"]  # the attack only ever turns right into wrong
    buckets = rec["buckets"]
    assert list(buckets) == ["0-24", "25-49", "50-74", "75-99"]
    assert sum(b["n"] for b in buckets.values()) == 16
    full = [b for b in buckets.values() if b["n"]]
    assert all({"clean_acc", "adv_acc", "stopped_early", "attack_steps"} <= set(b) for b in full)


def test_run_json_records_config_data_seed_and_versions(tmp_path):
    ds = tiny_data()
    train_classifier(clf_cfg(total_steps=1), tmp_path / "run", progress=False, dataset=ds)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"]["seed"] == 3 and info["seed"] == 3
    assert info["config"]["lr_start"] == 1e-3 and info["config"]["model"] == TINY_CLASSIFIER
    assert info["data"]["fingerprint"] == ds.fingerprint and info["data"]["num_images"] == 64
    assert info["torch"] == torch.__version__ and info["code_version"].startswith("0.")
    assert (tmp_path / "run" / "model.pt").is_file()


def test_a_different_config_in_the_same_directory_is_refused(tmp_path):
    ds = tiny_data()
    train_classifier(clf_cfg(total_steps=1), tmp_path / "run", progress=False, dataset=ds)
    with pytest.raises(RunConfigMismatch, match="lr_start"):
        train_classifier(clf_cfg(total_steps=2, lr_start=5e-3), tmp_path / "run", progress=False, dataset=ds)
    with pytest.raises(RunConfigMismatch, match="fingerprint"):
        train_classifier(clf_cfg(total_steps=2), tmp_path / "run", progress=False, dataset=tiny_data(seed=1))


@pytest.mark.slow
def test_a_few_steps_lower_a_tiny_classifiers_loss(tmp_path):
    ds = tiny_data(128)
    process = {"diffusion_steps": 100, "noise_schedule": "linear"}
    cfg = clf_cfg(total_steps=40, lr_start=3e-3, lr_end=1e-3, process=process, batch_size=32)
    from model_core.training.classifier import build_classifier
    torch.manual_seed(cfg.seed)
    untrained = build_classifier(TINY_CLASSIFIER)
    before = evaluate_classifier(untrained, ds, process, eps=0.5, attack_steps=1, buckets=2, progress=False)
    train_classifier(cfg, tmp_path / "run", progress=False, dataset=ds)
    losses = [r["loss"] for r in metrics(tmp_path / "run")]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), losses
    from model_core.checkpoints import load_weights
    trained = build_classifier(TINY_CLASSIFIER)
    load_weights(trained, tmp_path / "run" / "model.pt")
    after = evaluate_classifier(trained, ds, process, eps=0.5, attack_steps=1, buckets=2, progress=False)
    assert after["buckets"]["0-49"]["clean_acc"] > 0.9 > before["buckets"]["0-49"]["clean_acc"]


@pytest.mark.slow
def test_resumed_diffusion_run_with_ema_equals_uninterrupted_run(tmp_path):
    ds = tiny_data(32)
    cfg = DiffusionTrainConfig(model=TINY_UNET, process={**PROCESS, "learn_sigma": True}, data="tiny",
                               batch_size=8, total_steps=4, lr_start=1e-3, lr_end=1e-3, ema_decay=0.9, seed=1,
                               ckpt_every=100)
    train_diffusion(cfg, tmp_path / "whole", progress=False, dataset=ds)
    train_diffusion(cfg, tmp_path / "split", progress=False, dataset=ds, stop_at=2)
    torch.rand(10)  # dropout draws from the global RNG: its state must come back from the checkpoint
    train_diffusion(cfg, tmp_path / "split", progress=False, dataset=ds)
    a, b = state_of(tmp_path / "whole"), state_of(tmp_path / "split")
    assert_same_state(a, b)
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    rec = metrics(tmp_path / "whole")
    assert {"loss", "mse", "vb", "buckets"} <= set(rec[0])
    assert (tmp_path / "whole" / "ema.pt").is_file()


def test_timestep_power_one_is_the_uniform_draw_and_two_favours_small_t():
    from model_core.training.classifier import sample_timesteps

    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sample_timesteps(1000, 64, 1.0, g1), torch.randint(0, 1000, (64,), generator=g2))
    t = sample_timesteps(1000, 20_000, 2.0, torch.Generator().manual_seed(0))
    assert int(t.min()) >= 0 and int(t.max()) <= 999
    # P(t < T/4) = P(u**2 < 1/4) = 1/2 for power 2 (1/4 for uniform t).
    assert abs(float((t < 250).float().mean()) - 0.5) < 0.02


def test_timestep_power_must_be_positive():
    from model_core.errors import SettingError
    from model_core.training.recipes import classifier_recipe

    with pytest.raises(SettingError, match="t_power"):
        classifier_recipe("demo", overrides={"t_power": 0.0})
