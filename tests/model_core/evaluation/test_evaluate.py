"""`rguide evaluate` on the seeded random `tiny` preset: table shape, shared seeds, caching, errors."""
import json

import numpy as np
import pytest
import torch

from model_core.evaluation.quality import EvalSettings, run_evaluation
from model_core.models.feature_net import DigitFeatureNet, save_feature_net
from model_core.presets import get_preset
from rguide.cli import main


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    np.savez(d / "real.npz", images=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8),
             labels=np.arange(24) % 4)
    torch.manual_seed(0)
    save_feature_net(DigitFeatureNet(in_channels=3, num_classes=4, image_size=16, width=8, num_features=16),
                     d / "feat.pt", {})
    return d


@pytest.mark.slow
def test_evaluate_writes_table_with_shared_seeds_and_reuses_samples(tmp_path, assets, capsys):
    out = tmp_path / "ev"
    argv = ["evaluate", "--preset", "tiny", "--guidance", "none,vanilla,robust", "--scales", "0.5,2",
            "--per-class", "2", "--steps", "3", "--seed", "10", "--features", "digits",
            "--feature-weights", str(assets / "feat.pt"), "--real", str(assets / "real.npz"), "--k", "2",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    rows = [(r["method"], r["scale"]) for r in report["rows"]]
    assert rows == [("none", 0.0), ("vanilla", 0.5), ("vanilla", 2.0), ("robust", 0.5), ("robust", 2.0)]
    assert report["seeds"]["first"] == 10 and report["seeds"]["last"] == 17
    assert report["n_generated_per_row"] == 8 and report["real"]["num_images"] == 24
    for r in report["rows"]:
        assert r["fid"] >= 0 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
        assert 0 <= r["label_accuracy"] <= 1
    # Every row used the same labels and seeds; rows differ only by guidance.
    samples = {(r["method"], r["scale"]): np.load(out / "samples" / r["samples"]) for r in report["rows"]}
    for s in samples.values():
        assert s["seeds"].tolist() == list(range(10, 18)) and s["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not np.array_equal(samples[("none", 0.0)]["images"], samples[("robust", 2.0)]["images"])
    md = (out / "results.md").read_text()
    assert "| robust | 2 |" in md and "| robust | fid |" in md
    assert len(list((out / "grids").glob("*.png"))) == 5
    # A second run with one more scale reuses the cached rows bit for bit.
    before = {p.name: p.read_bytes() for p in (out / "samples").iterdir()}
    assert main([a if a != "0.5,2" else "0.5,1,2" for a in argv]) == 0
    after = {p.name: p.read_bytes() for p in (out / "samples").iterdir()}
    assert len(after) == 7 and all(after[k] == v for k, v in before.items())
    capsys.readouterr()


@pytest.mark.slow
def test_evaluate_compares_samplers_on_shared_seeds_with_costs_and_seed_noise(tmp_path, assets, capsys):
    out = tmp_path / "ev"
    argv = ["evaluate", "--preset", "tiny", "--guidance", "none,robust", "--scales", "preset", "--per-class", "1",
            "--samplers", "ddpm:3,dpmpp_2m:2", "--seed-noise", "--seed", "5", "--features", "digits",
            "--feature-weights", str(assets / "feat.pt"), "--real", str(assets / "real.npz"), "--k", "1",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    robust = get_preset("tiny").scale_for("robust", None)
    keys = [(r["sampler"], r["steps"], r["method"], r["scale"]) for r in report["rows"]]
    assert keys == [(s, st, m, sc) for s, st in (("ddpm", "3"), ("dpmpp_2m", "2"))
                    for m, sc in (("none", 0.0), ("robust", robust), ("robust", 2 * robust))]
    for r in report["rows"]:
        steps = {"3": 3, "2": 2}[r["steps"]]
        assert r["unet_evals_per_image"] == steps
        assert r["classifier_evals_per_image"] == (0 if r["method"] == "none" else steps)
        assert r["seconds_per_image"] > 0 and r["seeds"] == {"first": 5, "last": 8}  # every row: seeds 5..8
    # The reference (first) rows again on seeds 9..12, disjoint from every row's.
    ref = [r for r in report["rows"] if r["sampler"] == "ddpm"]
    assert all(r["second_seed_set"]["seeds"] == {"first": 9, "last": 12} for r in ref)
    assert all("second_seed_set" not in r for r in report["rows"] if r["sampler"] != "ddpm")
    second = np.load(out / "samples" / ref[0]["second_seed_set"]["samples"])
    assert second["seeds"].tolist() == [9, 10, 11, 12]
    noise = report["seed_noise"]
    assert noise["reference"] == "ddpm:3" and len(noise["rows"]) == 3
    fid_gap = abs(ref[0]["fid"] - ref[0]["second_seed_set"]["fid"])
    assert noise["rows"][0]["differences"]["fid"] == pytest.approx(fid_gap) and noise["max_difference"]["fid"] >= fid_gap
    md = (out / "results.md").read_text()
    assert "| dpmpp_2m | 2 | robust |" in md and "Seed-to-seed noise" in md and "**largest**" in md
    assert (out / "quality_vs_evaluations.png").stat().st_size > 1000
    assert (out / "grids" / "dpmpp_2m-2_robust_s{:g}.png".format(robust)).is_file()
    # A cached re-run reports the seconds the rows took when they were sampled.
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["seconds_per_image"] for r in again["rows"]] == [r["seconds_per_image"] for r in report["rows"]]
    capsys.readouterr()
    assert main(argv[:-3] + ["--steps", "5", "--out", str(out), "--no-progress"]) == 2
    assert "leave out --steps" in capsys.readouterr().err
    assert main([a if a != "ddpm:3,dpmpp_2m:2" else "ddpm:3,heun:5" for a in argv]) == 2
    assert "--samplers entry 'heun:5'" in capsys.readouterr().err


def test_evaluate_scales_default_is_each_methods_preset_scale_only(tmp_path, assets):
    out = tmp_path / "ev"
    argv = ["evaluate", "--preset", "tiny", "--guidance", "none,vanilla,robust", "--scales", "default",
            "--per-class", "1", "--steps", "2", "--seed", "5", "--features", "digits",
            "--feature-weights", str(assets / "feat.pt"), "--real", str(assets / "real.npz"), "--k", "1",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    tiny = get_preset("tiny")
    assert [(r["method"], r["scale"]) for r in rows] == [
        ("none", 0.0), ("vanilla", tiny.scale_for("vanilla", None)), ("robust", tiny.scale_for("robust", None))]


def test_same_seed_same_image_whatever_the_row_order(tmp_path, assets):
    kw = dict(preset="tiny", per_class=1, steps="2", seed=3, features="digits",
              feature_weights=str(assets / "feat.pt"), real_data=str(assets / "real.npz"), k=1)
    a = run_evaluation(EvalSettings(methods=["robust"], scales=[1.0], **kw), tmp_path / "a", progress=False)
    b = run_evaluation(EvalSettings(methods=["none", "robust"], scales=[0.5, 1.0], **kw), tmp_path / "b",
                       progress=False)
    img_a = np.load(tmp_path / "a" / "samples" / a["rows"][0]["samples"])["images"]
    img_b = np.load(tmp_path / "b" / "samples" / b["rows"][2]["samples"])["images"]
    assert np.array_equal(img_a, img_b)


@pytest.mark.parametrize("extra,msg", [
    (["--guidance", "none,magic"], "choose from"),
    (["--scales", "0.5,-1"], "positive"),
    (["--per-class", "0"], "--per-class"),
    (["--features", "inception", "--feature-weights", "/no/inception.pth"], "not found"),
])
def test_evaluate_errors_are_clear(tmp_path, assets, capsys, extra, msg):
    argv = ["evaluate", "--preset", "tiny", "--per-class", "1", "--steps", "2", "--features", "digits",
            "--feature-weights", str(assets / "feat.pt"), "--real", str(assets / "real.npz"),
            "--out", str(tmp_path / "o"), "--no-progress"] + extra
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_a_preset_without_real_data_says_what_to_pass(tmp_path, assets, capsys):
    assert main(["evaluate", "--preset", "tiny", "--per-class", "1", "--steps", "2", "--features", "digits",
                 "--feature-weights", str(assets / "feat.pt"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--real" in capsys.readouterr().err


def test_a_rows_cache_key_depends_only_on_the_networks_it_samples_with():
    from types import SimpleNamespace

    from model_core.evaluation.quality import _row_key

    settings = EvalSettings(preset="tiny", methods=["none"], scales=[1.0], per_class=2, seed=0)
    old = SimpleNamespace(sources={"diffusion": "sha256:d", "classifier:vanilla": "sha256:v",
                                   "classifier:robust": "sha256:r1"})
    new = SimpleNamespace(sources={**old.sources, "classifier:robust": "sha256:r2"})
    key = lambda pipe, method: _row_key(pipe, settings, method, 1.0, "10", "ddpm")
    assert key(old, "none") == key(new, "none") and key(old, "vanilla") == key(new, "vanilla")
    assert key(old, "robust") != key(new, "robust")
    changed_unet = SimpleNamespace(sources={**old.sources, "diffusion": "sha256:d2"})
    assert all(key(old, m) != key(changed_unet, m) for m in ("none", "vanilla", "robust"))


@pytest.mark.parametrize("flags,expected", [
    ({}, {"attack": "l2", "eps": 2.0, "step_size": 0.333, "attack_steps": 7}),           # the preset's recipe
    ({"eps": 1.2}, {"attack": "l2", "eps": 1.2, "step_size": 0.1992, "attack_steps": 7}),  # paper's eps/6 step
    ({"eps": 0.5, "step_size": 0.083}, {"attack": "l2", "eps": 0.5, "step_size": 0.083, "attack_steps": 7}),
    ({"attack": "linf", "attack_steps": 3}, {"attack": "linf", "eps": 2.0, "step_size": 0.333, "attack_steps": 3}),
])
def test_evaluate_classifier_attacks_with_the_training_recipe_unless_told(flags, expected):
    from types import SimpleNamespace

    from rguide.cmd_evaluate import attack_settings

    preset = SimpleNamespace(extra={"training": {"robust": {"attack": "l2", "eps": 2.0, "step_size": 0.333,
                                                            "attack_steps": 7}}})
    args = SimpleNamespace(**{"attack": None, "eps": None, "step_size": None, "attack_steps": None, **flags})
    assert attack_settings(preset, args) == expected
    paper = attack_settings(SimpleNamespace(extra={}), SimpleNamespace(attack=None, eps=None, step_size=None,
                                                                       attack_steps=None))
    assert paper == {"attack": "l2", "eps": 0.5, "step_size": 0.083, "attack_steps": 7}
