"""Guidance providers: a preset's classifier entry names its kind, and the pipeline and loop use any kind
registered in ``model_core.sampling.providers`` (module + preset JSON, nothing else)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import sampler_support
from model_core import presets
from model_core.sampling import providers

TINY = json.loads((presets.PRESET_DIR / "tiny.json").read_text())


def _write(tmp_path, raw) -> presets.Preset:
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(raw))
    return presets._load(path)


def test_the_default_kind_is_the_adm_classifier_and_unknown_kinds_are_refused_at_load(tmp_path):
    assert providers.get(None).name == providers.DEFAULT_KIND == "adm_classifier"
    raw = json.loads(json.dumps(TINY))
    raw["classifiers"]["robust"]["kind"] = "diffusion_classifier"
    with pytest.raises(ValueError, match=r"classifiers\.robust\.kind 'diffusion_classifier' is not a classifier "
                                         r"kind; known kinds: adm_classifier"):
        _write(tmp_path, raw)


def test_preset_kinds_are_checked_without_torch(tmp_path):
    raw = json.loads(json.dumps(TINY))
    raw["classifiers"]["vanilla"]["kind"] = "adm_classifier"
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(raw))
    code = (f"import sys, pathlib, model_core.presets as p; p._load(pathlib.Path({str(path)!r})); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def counting_kind():
    providers.register(providers.ProviderKind("counting", "sampler_support:build_counting", "test kind"))
    sampler_support.CALLS.clear()
    yield "counting"
    providers.unregister("counting")


def test_a_registered_kind_guides_through_the_pipeline(tmp_path, counting_kind):
    from model_core.pipeline import Pipeline, get_pipeline

    raw = json.loads(json.dumps(TINY))
    raw["classifiers"]["robust"]["kind"] = counting_kind
    pipe = Pipeline(_write(tmp_path, raw), "cpu")
    assert pipe.sources["classifier:robust"] == "counting:random-init:seed=3"
    assert pipe.classifiers["robust"] is pipe.providers["robust"].module
    from model_core.sampling import registry

    for sampler in registry.names():  # any sampler is guided by any provider
        sampler_support.CALLS.clear()
        got = pipe.sample([1], [5], "robust", 1.0, "4", sampler)
        # The provider sees the original training indices of the kept steps, the last step included.
        assert sampler_support.CALLS == [[t] for t in reversed(pipe.diffusion("4").timestep_map)]
        want = get_pipeline("tiny", "cpu").sample([1], [5], "robust", 1.0, "4", sampler)
        assert (got[0] == want[0]).all()
