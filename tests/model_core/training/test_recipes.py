"""Policy in the core: training recipes from presets, attack defaults, held-out splits, and errors that name
settings (the core) or flags (the CLI)."""
import json
import pickle
from types import SimpleNamespace

import pytest

from model_core.data import DatasetError, heldout_data, heldout_split, load_dataset
from model_core.errors import SettingError, message
from model_core.presets import get_preset
from model_core.robustness.defaults import PAPER_ATTACK, attack_settings
from model_core.training.classifier import ClassifierTrainConfig
from model_core.training.diffusion import DiffusionTrainConfig
from model_core.training.recipes import classifier_process, classifier_recipe, diffusion_recipe
from rguide.cli import main

# What `rguide train-* --preset demo` resolved to before the recipes moved into the core (every field but the
# model, which is the preset's own dict).
DEMO_ROBUST = {"attack": "l2", "attack_steps": 7, "batch_size": 128, "ckpt_every": 100, "crop_pad": 0,
               "data": "mnist", "ema_decay": 0.0, "eps": 2.0, "hflip": False, "holdout": None, "lr_end": 6e-05,
               "lr_start": 0.0003, "process": {"diffusion_steps": 1000, "noise_schedule": "linear"}, "robust": True,
               "seed": 0, "step_size": 0.333, "timestep_buckets": 4, "total_steps": 1000, "value_range": "auto",
               "weight_decay": 0.05}
DEMO_VANILLA = {**DEMO_ROBUST, "robust": False, "eps": 0.5, "step_size": 0.083}
DEMO_DIFFUSION = {"batch_size": 64, "ckpt_every": 250, "crop_pad": 0, "data": "mnist", "ema_decay": 0.999,
                  "hflip": False, "holdout": None, "lr_end": 0.0001, "lr_start": 0.0003,
                  "process": {"diffusion_steps": 1000, "learn_sigma": True, "noise_schedule": "linear"}, "seed": 0,
                  "timestep_buckets": 4, "total_steps": 3000, "value_range": "auto", "weight_decay": 0.0}


def _without_model(cfg) -> dict:
    d = cfg.to_dict()
    d.pop("model")
    return d


def test_demo_recipes_are_the_presets_training_section_over_the_dataclass_defaults():
    demo = get_preset("demo")
    training = demo.extra["training"]
    robust = classifier_recipe(demo, robust=True)
    assert _without_model(robust) == DEMO_ROBUST
    assert robust.model == demo.classifiers["robust"]["model"]
    # Field by field: the recipe's values where it has them, the dataclass defaults elsewhere.
    defaults = ClassifierTrainConfig(model={})
    for key, value in DEMO_ROBUST.items():
        expected = {**training["classifier"], **training["robust"], "data": training["data"]}.get(
            key, getattr(defaults, key))
        if key == "process":
            expected = {k: v for k, v in demo.diffusion["process"].items() if k != "learn_sigma"}
        elif key == "robust":
            expected = True
        assert value == expected, key
    vanilla = classifier_recipe("demo", robust=False)  # a preset name works too
    assert _without_model(vanilla) == DEMO_VANILLA and vanilla.model == demo.classifiers["vanilla"]["model"]
    diffusion = diffusion_recipe(demo)
    assert _without_model(diffusion) == DEMO_DIFFUSION and diffusion.model == demo.diffusion["model"]
    d_defaults = DiffusionTrainConfig(model={})
    for key, value in DEMO_DIFFUSION.items():
        if key != "process":
            assert value == {**training["diffusion"], "data": "mnist"}.get(key, getattr(d_defaults, key)), key


@pytest.mark.parametrize("argv,expected,model", [
    (["train-classifier", "--preset", "demo", "--robust"], DEMO_ROBUST, ("classifiers", "robust")),
    (["train-classifier", "--preset", "demo"], DEMO_VANILLA, ("classifiers", "vanilla")),
    (["train-diffusion", "--preset", "demo"], DEMO_DIFFUSION, ("diffusion",)),
    (["train-classifier", "--preset", "demo", "--robust", "--eps", "1.0", "--steps", "7", "--hflip"],
     {**DEMO_ROBUST, "eps": 1.0, "total_steps": 7, "hflip": True}, ("classifiers", "robust")),
])
def test_the_cli_resolves_presets_to_the_same_configs_as_before(monkeypatch, tmp_path, argv, expected, model):
    import rguide.cmd_train as cmd_train

    seen = []
    monkeypatch.setattr(cmd_train, "_train", lambda fn, cfg, args: seen.append(cfg) or SimpleNamespace(
        finished=False, step=0, total_steps=cfg.total_steps))
    assert main(argv + ["--out", str(tmp_path / "run")]) == 0
    (cfg,) = seen
    assert _without_model(cfg) == expected
    preset = get_preset("demo")
    assert cfg.model == (preset.diffusion["model"] if model == ("diffusion",) else preset.classifiers[model[1]]["model"])


def test_recipe_without_a_preset_and_overrides_by_field_name():
    model = {"image_size": 8, "in_channels": 1, "num_classes": 2}
    cfg = classifier_recipe(None, robust=True, overrides={"model": model, "data": "x.npz", "total_steps": 5,
                                                           "eps": None})
    assert cfg.model == model and cfg.data == "x.npz" and cfg.total_steps == 5
    assert (cfg.attack, cfg.eps, cfg.step_size, cfg.attack_steps) == ("l2", 0.5, 0.083, 7)  # the paper's
    assert cfg.process == {"diffusion_steps": 1000, "noise_schedule": "linear"}
    with pytest.raises(SettingError) as err:
        classifier_recipe(None, overrides={"model": model})
    assert err.value.setting == "data" and str(err.value).startswith("data is required")
    with pytest.raises(SettingError) as err:
        diffusion_recipe(None, {"data": "mnist"})
    assert str(err.value) == "give preset or model (the UNet's ADM flags as JSON)"
    with pytest.raises(SettingError, match="classifier 'huge': preset 'demo' has vanilla, robust"):
        classifier_recipe("demo", classifier="huge")
    with pytest.raises(TypeError):
        classifier_recipe("demo", overrides={"no_such_field": 1})


def test_classifier_process_drops_learn_sigma():
    assert classifier_process(get_preset("demo")) == {"diffusion_steps": 1000, "noise_schedule": "linear"}


@pytest.mark.parametrize("given,expected", [
    ({}, {"attack": "l2", "eps": 2.0, "step_size": 0.333, "attack_steps": 7}),
    ({"eps": 1.2, "step_size": None}, {"attack": "l2", "eps": 1.2, "step_size": 0.1992, "attack_steps": 7}),
    ({"attack": "linf", "attack_steps": 3}, {"attack": "linf", "eps": 2.0, "step_size": 0.333, "attack_steps": 3}),
])
def test_attack_settings_in_the_core(given, expected):
    assert attack_settings(get_preset("demo"), given).to_dict() == expected
    assert attack_settings(None) == PAPER_ATTACK == attack_settings(get_preset("tiny"))
    assert ClassifierTrainConfig(model={}).eps == PAPER_ATTACK.eps


def test_heldout_split_rule():
    assert heldout_split("mnist") == "test" and heldout_split("my.npz") == "all"
    assert heldout_data(get_preset("demo")) == ("mnist", "test")
    assert heldout_data(get_preset("demo"), "mine.npz") == ("mine.npz", "all")
    with pytest.raises(SettingError) as err:
        heldout_data(SimpleNamespace(name="bare", extra={}))
    assert str(err.value) == "preset 'bare' has no training data recorded: give data"
    assert err.value.render({"data": "--data"}).endswith("give --data")


def test_setting_error_renders_only_its_settings_and_pickles():
    err = SettingError("real_data", "give {real_data} not {other} {'a': 1}")
    assert str(err) == "give real_data not {other} {'a': 1}"
    assert err.render({"real_data": "--real", "other": "--x"}) == "give --real not {other} {'a': 1}"
    assert message(ValueError("plain"), {"plain": "--p"}) == "plain"
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is SettingError and again.render({"real_data": "R"}) == err.render({"real_data": "R"})


def test_core_data_messages_name_the_setting_and_the_cli_the_flag(tmp_path, capsys):
    with pytest.raises(DatasetError) as err:
        load_dataset("/no/such/place")
    assert str(err.value).startswith("data '/no/such/place'") and "--" not in str(err.value)
    with pytest.raises(DatasetError) as err:
        load_dataset("/no/such/place", setting="real_data")
    assert str(err.value).startswith("real_data '/no/such/place'")
    with pytest.raises(DatasetError, match="leave holdout unset"):
        load_dataset("mnist", holdout=0.3)
    assert main(["train-classifier", "--preset", "demo", "--data", "/no/such/place", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "--data '/no/such/place': not 'mnist'" in capsys.readouterr().err


def test_core_training_messages_name_fields_and_the_cli_flags(tmp_path, capsys):
    with pytest.raises(SettingError) as err:
        classifier_recipe("demo", overrides={"total_steps": 0})
    assert str(err.value) == "total_steps must be >= 1, got 0"
    assert main(["train-classifier", "--preset", "demo", "--steps", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SettingError, match="learn_sigma must agree between model and process"):
        diffusion_recipe("demo", {"process": {"diffusion_steps": 1000}})
    (tmp_path / "p.json").write_text(json.dumps({"diffusion_steps": 1000}))
    assert main(["train-diffusion", "--preset", "demo", "--process-config", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "r")]) == 2
    assert "learn_sigma must agree between --model-config and --process-config" in capsys.readouterr().err


def test_core_evaluation_messages_name_settings():
    from model_core.evaluation.quality import EvalSettings, evaluation_setup
    from model_core.models.inception import InceptionWeightsError, load_inception

    bare = SimpleNamespace(name="bare", extra={})
    with pytest.raises(SettingError) as err:
        evaluation_setup(bare, EvalSettings(preset="bare"))
    assert "give features inception with feature_weights PATH" in str(err.value) and "--" not in str(err.value)
    assert "give --features inception with --feature-weights PATH" in err.value.render(
        {"features": "--features", "feature_weights": "--feature-weights"})
    with pytest.raises(SettingError) as err:
        evaluation_setup(bare, EvalSettings(preset="bare", features="digits"))
    assert str(err.value).endswith("give real_data (a .npz file or a class folder)")
    with pytest.raises(InceptionWeightsError) as err:
        load_inception("/no/inception.pth")
    assert "/no/inception.pth" in str(err.value) and "give feature_weights" in str(err.value)
    assert isinstance(err.value, FileNotFoundError) and err.value.setting == "feature_weights"


def test_a_presets_feature_weights_variable_is_read(monkeypatch, tmp_path):
    from model_core.evaluation.quality import EvalSettings, evaluation_setup

    monkeypatch.setenv("RGUIDE_TEST_FEATURES", str(tmp_path / "f.pt"))
    preset = SimpleNamespace(name="p", extra={"evaluation": {"real_data": "mnist", "features": {
        "kind": "digits", "env": "RGUIDE_TEST_FEATURES"}}})
    assert evaluation_setup(preset, EvalSettings(preset="p")) == ("digits", str(tmp_path / "f.pt"), "mnist", "test")



def test_feature_weights_and_value_range_messages_name_their_settings(tmp_path):
    import numpy as np

    from model_core.data import load_npz
    from model_core.evaluation.metrics import load_extractor

    with pytest.raises(SettingError, match="give feature_weights$"):
        load_extractor("digits", None)
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4), dtype=np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DatasetError, match="^value_range must be one of"):
        load_npz(tmp_path / "d.npz", value_range="0-9")


def test_data_that_do_not_fit_the_model_is_a_clear_cli_error(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "rgb.npz", images=np.zeros((4, 28, 28, 3), dtype=np.uint8), labels=np.array([0, 1, 0, 1]))
    assert main(["train-classifier", "--preset", "demo", "--data", str(tmp_path / "rgb.npz"), "--steps", "1",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "--data has 3 channels but the model config (--model-config) says in_channels=1" in capsys.readouterr().err


def test_an_ema_state_for_another_model_is_a_run_config_mismatch():
    import torch

    from model_core.training.loop import EMA, RunConfigMismatch

    ema = EMA(torch.nn.Linear(2, 2), 0.9)
    with pytest.raises(RunConfigMismatch, match="EMA state does not match the model"):
        ema.load_state_dict({})
