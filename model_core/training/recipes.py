"""Training recipes: a preset (or a bare model config) plus overrides -> a validated training config.

A preset names the architecture (``classifiers[NAME].model``,
``diffusion.model``), the diffusion process (``diffusion.process``) and its
training recipe (``extra.training`` in its JSON: ``data``, and the
hyperparameters of ``diffusion``, ``classifier`` and, for a robust
classifier, ``robust``). The recipe fills the config's fields; every
override replaces one; fields neither gives keep the dataclass defaults
(the paper's values for classifiers). This is the one place that rule
lives, so ``rguide train-*``, a worker task or a ``torchrun`` entry point
that pass the same preset and overrides get the same config.

``overrides`` are keyed by config field names (``total_steps``, not
``--steps``; ``model`` and ``process`` replace the whole architecture or
process dict); None values mean "not given". Errors are
:class:`~model_core.errors.SettingError` naming those fields, or
``TypeError`` for a key the config does not have.
"""
from __future__ import annotations

from typing import Any, Mapping

from model_core.data import preset_training_data
from model_core.errors import SettingError
from model_core.training.classifier import DEFAULT_PROCESS, ClassifierTrainConfig
from model_core.training.diffusion import DiffusionTrainConfig


def _preset(preset):
    if preset is None or not isinstance(preset, str):
        return preset
    from model_core.presets import get_preset

    return get_preset(preset)


def _given(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (overrides or {}).items() if v is not None}


def _without_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def classifier_process(preset) -> dict[str, Any]:
    """The diffusion process a preset's classifiers see: the preset's, without ``learn_sigma`` (a UNet matter)."""
    return {k: v for k, v in _preset(preset).diffusion["process"].items() if k != "learn_sigma"}


def classifier_name(robust: bool, classifier: str | None = None) -> str:
    """Which of a preset's classifier configs is trained: ``classifier``, else ``robust`` or ``vanilla``."""
    return classifier or ("robust" if robust else "vanilla")


def classifier_recipe(preset=None, *, robust: bool = False, classifier: str | None = None,
                      overrides: Mapping[str, Any] | None = None) -> ClassifierTrainConfig:
    """The config that trains ``preset``'s classifier ``classifier`` (vanilla or robust), with ``overrides``.

    ``preset`` is a :class:`~model_core.presets.Preset`, a preset name, or
    None: then ``overrides`` must give ``model`` (the classifier's ADM flags)
    and ``data``. With ``robust`` the preset's ``extra.training.robust``
    attack is part of the recipe.
    """
    preset = _preset(preset)
    given = _given(overrides)
    if "robust" in given:
        raise TypeError("robust is chosen by the robust argument, not an override")
    model = given.pop("model", None)
    process = given.pop("process", None)
    recipe: dict[str, Any] = {}
    if preset is not None:
        name = classifier_name(robust, classifier)
        if name not in preset.networks:  # a diffusion-guided method has no classifier network to train
            raise SettingError("classifier", f"{{classifier}} {name!r}: preset {preset.name!r} has "
                                             f"{', '.join(preset.networks)}")
        model = model or preset.classifiers[name]["model"]
        process = process or classifier_process(preset)
        training = preset.extra.get("training", {})
        recipe = _without_none({"data": preset_training_data(preset), **training.get("classifier", {}),
                                **(training.get("robust", {}) if robust else {})})
    if model is None:
        raise SettingError("model", "give {preset} or {model} (the classifier's ADM flags as JSON)",
                           also=("preset",))
    settings = {**recipe, **given}
    if "data" not in settings:
        raise SettingError("data", "{data} is required without a preset recipe ('mnist', a .npz file or a class "
                                   "folder)")
    cfg = ClassifierTrainConfig(model=model, process=process or dict(DEFAULT_PROCESS), robust=bool(robust),
                                **settings)
    cfg.validate()
    return cfg


def diffusion_recipe(preset=None, overrides: Mapping[str, Any] | None = None) -> DiffusionTrainConfig:
    """The config that trains ``preset``'s diffusion model, with ``overrides`` (see :func:`classifier_recipe`)."""
    preset = _preset(preset)
    given = _given(overrides)
    model = given.pop("model", None)
    process = given.pop("process", None)
    recipe: dict[str, Any] = {}
    if preset is not None:
        model = model or preset.diffusion["model"]
        process = process or preset.diffusion["process"]
        training = preset.extra.get("training", {})
        recipe = _without_none({"data": preset_training_data(preset), **training.get("diffusion", {})})
    if model is None:
        raise SettingError("model", "give {preset} or {model} (the UNet's ADM flags as JSON)", also=("preset",))
    settings = {**recipe, **given}
    if "data" not in settings:
        raise SettingError("data", "{data} is required without a preset recipe ('mnist', a .npz file or a class "
                                   "folder)")
    kwargs = {"process": process} if process else {}
    cfg = DiffusionTrainConfig(model=model, **kwargs, **settings)
    cfg.validate()
    return cfg
