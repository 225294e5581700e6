"""Truth Maximization (one step lowers the denoising loss on its batch; a short run checkpoints and selects)
and the robustness report end to end on the tiny preset (random networks: plumbing, not numbers)."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from model_core.data import ImageDataset
from model_core.diffusion import create_diffusion
from model_core.diffusion_classifier.truth_max import (TruthMaxConfig, denoising_loss, select_checkpoint,
                                                       train_truth_max, truth_max_step)
from model_core.errors import SettingError
from model_core.pipeline import Pipeline
from model_core.presets import get_preset


@pytest.fixture(scope="module")
def tiny():
    return Pipeline(get_preset("tiny"), "cpu")


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.rand(n, 3, 16, 16, generator=g) * 2 - 1, torch.arange(n) % 4,
                        ("red", "green", "blue", "grey"), "synthetic")


def test_one_truth_max_step_lowers_the_denoising_loss_on_its_batch(tiny):
    diffusion = create_diffusion(tiny.preset.diffusion["process"])
    model = copy.deepcopy(tiny.unet).float()
    model.requires_grad_(True)
    ds = _data(8)
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (8,), generator=g)
    noise = torch.randn(ds.images.shape, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
    before = truth_max_step(model, opt, diffusion, ds.images, ds.labels, t, noise)
    with torch.no_grad():
        after = float(denoising_loss(model, diffusion, ds.images, ds.labels, t, noise))
    assert after < before
    # the pipeline's own network is untouched (fine-tuning works on a copy)
    assert all(not p.requires_grad for p in tiny.unet.parameters())


def test_truth_max_run_checkpoints_and_selects(tiny, tmp_path):
    cfg = TruthMaxConfig(preset="tiny", batch_size=4, total_steps=2, ckpt_every=1, warmup_steps=1, lr=1e-4,
                         attack="fgsm", select_n=4, select_schedule="2")
    res = train_truth_max(cfg, tmp_path, pipeline=tiny, dataset=_data(), progress=False)
    assert res.finished and (tmp_path / "ckpt_000001.pt").is_file() and (tmp_path / "ckpt_000002.pt").is_file()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["lr"] == pytest.approx(1e-4) and lines[0]["perturbation_linf"] <= 0.05 + 1e-6
    sel = select_checkpoint(cfg, tmp_path, pipeline=tiny, dataset=_data(12, seed=3))
    assert [r["step"] for r in sel["checkpoints"]] == [0, 1, 2]
    assert sel["best"]["robust_accuracy"] == max(r["robust_accuracy"] for r in sel["checkpoints"])
    assert json.loads((tmp_path / "selection.json").read_text())["best"] == sel["best"]
    with pytest.raises(SettingError):
        TruthMaxConfig(attack="autoattack").validate()
    with pytest.raises(SettingError, match="select_attack"):
        TruthMaxConfig(select_attack="none").validate()


def test_the_clean_control_trains_on_unperturbed_digits_and_is_selected_under_the_attack(tiny, tmp_path):
    cfg = TruthMaxConfig(preset="tiny", batch_size=4, total_steps=1, ckpt_every=1, warmup_steps=1, lr=1e-4,
                         attack="none", select_attack="fgsm", select_n=4, select_schedule="2")
    train_truth_max(cfg, tmp_path, pipeline=tiny, dataset=_data(), progress=False)
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert line["perturbation_linf"] == 0
    sel = select_checkpoint(cfg, tmp_path, pipeline=tiny, dataset=_data(12, seed=3))
    assert sel["attack"] == "fgsm" and sel["training_attack"] == "none"


def test_selection_digits_follow_the_report_seed_not_the_training_seed(tiny, tmp_path):
    # two runs that differ only in their training seed are selected on the same digits, the last select_n
    # of the report's permutation (so none of the report's first n), and a different eval_seed moves them
    data = _data(12, seed=3)
    picked = {}
    for seed, eval_seed in ((0, 0), (5, 0), (0, 2)):
        out = tmp_path / f"s{seed}-e{eval_seed}"
        cfg = TruthMaxConfig(preset="tiny", batch_size=4, total_steps=1, ckpt_every=1, warmup_steps=1, lr=1e-4,
                             attack="fgsm", select_n=4, select_schedule="2", seed=seed, eval_seed=eval_seed)
        train_truth_max(cfg, out, pipeline=tiny, dataset=_data(), progress=False)
        picked[seed, eval_seed] = select_checkpoint(cfg, out, pipeline=tiny, dataset=data)["indices"]
    report_first = torch.randperm(12, generator=torch.Generator().manual_seed(0))[:8].tolist()
    assert picked[0, 0] == picked[5, 0] and not set(picked[0, 0]) & set(report_first)
    assert picked[0, 2] != picked[0, 0]


@pytest.mark.slow
def test_report_end_to_end_on_tiny(tiny, tmp_path):
    from model_core.robustness.report import ReportConfig, planned_phases, run_report, to_markdown, write_report

    cfg = ReportConfig(preset="tiny", attacks=("fgsm", "fgm-l2", "pgd-l2"), n=6, schedule="2:2,3",
                       diffusion_whitebox_n=3, diffusion_whitebox_steps=2, diffusion_gradients=("fixed", "eot"),
                       eot_samples=2, sanity_n=3, sanity_eps=(0.05, 0.5), sanity_eps_l2=(0.5, 3.0), batch_size=6)
    phases = []
    out = run_report(cfg, pipeline=tiny, dataset=_data(10),
                     progress=lambda phase, done, total: phases[-1:] == [phase] or phases.append(phase))
    # every announced phase is distinct and they are as many as planned (a worker job's progress total)
    assert len(phases) == len(set(phases)) == planned_phases(cfg)
    rep = out["report"]
    settings = {(r["setting"], r["attack"], r["defence"], r.get("gradient_estimator")) for r in rep["results"]}
    assert ("transfer", "fgsm", "diffusion", None) in settings and ("whitebox", "pgd-l2", "diffusion", "eot") in settings
    fixed = [r for r in rep["results"] if r["setting"] == "whitebox" and r.get("gradient_estimator") == "fixed"]
    eot = [r for r in rep["results"] if r["setting"] == "whitebox" and r.get("gradient_estimator") == "eot"]
    assert all(r["n"] == 3 for r in fixed + eot) and fixed[2]["steps"] == 2
    assert fixed[0]["network_evaluations_attack_per_image"] == 4 * 2       # classes x attack timesteps, one pass
    assert eot[0]["network_evaluations_attack_per_image"] == 4 * 2 * 2     # ... times the EOT passes
    assert eot[0]["eot_samples"] == 2 and fixed[0]["eot_samples"] == 1
    assert all(r["max_perturbation"] <= r["eps"] + 1e-6 for r in rep["results"])
    assert len(out["per_sample"]["whitebox/fgsm/diffusion"]["correct"]) == 3
    assert len(out["per_sample"]["whitebox/fgsm/diffusion/eot"]["correct"]) == 3
    # the sanity checks run per threat model: an eps sweep and one-step vs iterative for Linf and for L2
    sweeps = {(c["defence"], c["norm"]) for c in rep["sanity"] if c["check"] == "accuracy falls as eps grows"}
    assert {("vanilla", "l2"), ("vanilla", "linf"), ("diffusion (fixed draws)", "l2")} <= sweeps
    steps = [c for c in rep["sanity"] if c["check"] == "more iterations do not raise accuracy"]
    assert {(c["one_step"], c["iterative"]) for c in steps} == {("fgm-l2", "pgd-l2")}
    md = to_markdown(rep)
    assert "Transfer attacks" in md and "Adaptive white-box" in md and "Sanity checks" in md
    assert "| diffusion, fixed draws |" in md and "| diffusion, EOT over 2 draws |" in md
    paths = write_report(out, tmp_path)
    assert json.loads(paths["json"].read_text())["schema"] == "rguide.robustness/1"
