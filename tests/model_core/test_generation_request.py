"""One resolver for generation requests: the API, the survey and ``rguide sample`` share its rules and defaults."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO, make_settings
from model_core.generation_request import Limits, RequestInvalid, resolve_generation
from model_core.presets import _load, get_preset


def fields(exc: RequestInvalid) -> list[tuple]:
    return [e.field for e in exc.errors]


def test_pair_resolves_to_the_presets_comparison_with_its_arms_scales():
    r = resolve_generation(preset="tiny", class_labels=[0, "blue"], guidance="pair", seed=7)
    preset = get_preset("tiny")
    assert r.methods == preset.pair_methods == ("robust", "vanilla")
    assert r.scales == preset.comparison_scales() == {"robust": 1.0, "vanilla": 0.5}
    assert r.labels == (0, preset.resolve_label("blue")) and r.seeds == (7, 8)
    assert (r.steps, r.sampler, r.num_steps) == ("10", "ddpm", 10) and r.num_images == 4


def test_every_problem_is_reported_with_its_field():
    with pytest.raises(RequestInvalid) as info:
        resolve_generation(preset="tiny", class_labels=[9, "x"], guidance="pair", scale={"robust": 0, "fast": 1},
                           steps="ddim7", sampler="ddpm", seed=-1)
    assert fields(info.value) == [("class_labels", 0), ("class_labels", 1), ("scale", "robust"), ("scale", "fast"),
                                  ("steps",), ("seed",)]
    with pytest.raises(RequestInvalid) as info:
        resolve_generation(preset="tiny", class_labels=[0], guidance="sharp")
    assert fields(info.value) == [("guidance",)] and "is not one of none, vanilla, robust, pair" in str(info.value)
    with pytest.raises(RequestInvalid) as info:
        resolve_generation(preset="nope", class_labels=[0], guidance="none")
    assert fields(info.value) == [("preset",)]


@pytest.mark.parametrize("scale", [0, -1.0, True, "1"])
def test_a_scale_must_be_a_positive_number_everywhere(scale):
    with pytest.raises(RequestInvalid, match="scale must be"):
        resolve_generation(preset="tiny", class_labels=[0], guidance="robust", scale=scale)


def test_limits_and_defaults():
    r = resolve_generation(preset="tiny", class_labels=[1], guidance="robust", steps="ddim5", seed=0)
    assert (r.steps, r.sampler, r.scales) == ("ddim5", "ddim", {"robust": 1.0})
    r = resolve_generation(preset="tiny", class_labels=[1], guidance="none", seed=3)
    assert r.scales == {} and r.methods == ("none",)
    with pytest.raises(RequestInvalid) as info:
        resolve_generation(preset="tiny", class_labels=[0, 1, 2], guidance="pair", scale=3.0, steps="20",
                           limits=Limits(max_images=4, max_scale=2.0, max_steps=10))
    assert fields(info.value) == [("class_labels",), ("scale",), ("steps",)]
    assert "6 images requested (3 labels x 2 images for a pair)" in str(info.value)


def test_fast_samplers_take_plain_and_log_snr_step_counts():
    # "--steps 20" is 20 model evaluations for DPM-Solver++; "logsnr20" places them uniformly in log-SNR.
    r = resolve_generation(preset="tiny", class_labels=[1], guidance="pair", steps="logsnr8", sampler="dpmpp_2m_sde")
    assert (r.steps, r.sampler, r.num_steps) == ("logsnr8", "dpmpp_2m_sde", 8)
    r = resolve_generation(preset="tiny", class_labels=[1], guidance="robust", steps=20, sampler="dpmpp_2m")
    assert (r.steps, r.sampler, r.num_steps) == ("20", "dpmpp_2m", 20)
    with pytest.raises(RequestInvalid) as info:
        resolve_generation(preset="tiny", class_labels=[1], guidance="robust", steps="logsnr0", sampler="dpmpp_2m")
    assert fields(info.value) == [("steps",)]
    with pytest.raises(RequestInvalid) as info:
        resolve_generation(preset="tiny", class_labels=[1], guidance="robust", steps="ddim10", sampler="dpmpp_2m")
    assert fields(info.value) == [("steps",)] and "DDIM spacing" in str(info.value)


def test_explicit_seeds_one_per_label():
    r = resolve_generation(preset="tiny", class_labels=[0, 1], guidance="none", seeds=[5, 2])
    assert r.seeds == (5, 2)
    with pytest.raises(RequestInvalid) as info:
        resolve_generation(preset="tiny", class_labels=[0, 1], guidance="none", seeds=[5])
    assert fields(info.value) == [("seeds",)]


def test_api_survey_and_cli_resolve_the_same_request_alike(tmp_path):
    """Same fields in, same resolved settings out, through each caller's own front end."""
    from app.survey.studies import plan_study
    from app.survey.schemas import StudyCreate
    from app.validation import validate_generation

    settings = make_settings(tmp_path, database_url="sqlite://", broker_url="memory://", redis_url=None)
    api = validate_generation(SimpleNamespace(preset="tiny", class_labels=[2, 3], guidance="pair", scale=None,
                                              steps="ddim5", sampler=None, seed=11), settings)
    study = plan_study(StudyCreate(preset="tiny", method_a="robust", method_b="vanilla", labels=[2, 3], seed=11,
                                   steps="ddim5", attention_checks=False), settings)
    out = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "rguide", "sample", "--preset", "tiny", "--labels", "2,3", "--guidance",
                    "pair", "--steps", "ddim5", "--seed", "11", "--out", str(out), "--no-progress"],
                   check=True, cwd=REPO, capture_output=True)
    cli = json.loads((out / "samples.json").read_text())["images"]
    (_, spec), = study.specs
    assert spec == api
    assert [(i["label"], i["seed"], i["method"], i["scale"], i["steps"], i["sampler"]) for i in cli] == [
        (label, seed, m, api.scales[m], api.steps, api.sampler)
        for label, seed in zip(api.labels, api.seeds) for m in api.methods]


def test_the_cli_names_its_flags_where_the_api_names_fields(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rguide", "sample", "--preset", "tiny", "--labels", "1,9",
                             "--scale", "0", "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "--labels: class label 9 is out of range" in result.stderr
    assert "--scale must be positive" in result.stderr and "Traceback" not in result.stderr


def test_a_comparison_must_name_two_arms_of_different_methods(tmp_path):
    base = json.loads((REPO / "model_core/data/presets/tiny.json").read_text())
    for comparison, message in ((["robust"], "exactly 2"), (["robust", "fast"], "arm 'fast'"),
                                (["robust", "robust2"], "two different methods")):
        raw = {**base, "comparison": comparison,
               "arms": base["arms"] + [{"name": "robust2", "method": "robust", "scale": 2.0}]}
        path = tmp_path / "p.json"
        path.write_text(json.dumps(raw))
        with pytest.raises(ValueError, match=message):
            _load(path)
    raw = {**base, "arms": [{"name": "r", "method": "nope"}]}
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"arms\[0\]\.method 'nope'"):
        _load(path)


def test_the_resolver_needs_no_torch():
    code = ("import sys; from model_core.generation_request import resolve_generation; "
            "resolve_generation(preset='tiny', class_labels=[0], guidance='pair', seed=1); "
            "resolve_generation(preset='tiny', class_labels=[0], guidance='pair', steps='logsnr9', sampler='dpmpp_2m'); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
