"""The analysis resolver (torch-free): defaults written out, every bad field named."""
from __future__ import annotations

import math

import numpy as np
import pytest

from model_core.analysis import kinds, render
from model_core.analysis.inputs import heldout_indices
from model_core.analysis.requests import AnalysisLimits, default_arm_names, paper_radius, resolve_analysis
from model_core.generation_request import RequestInvalid
from model_core.images import encode_png
from model_core.presets import get_preset


def png(size=16, channels=3, seed=0) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8))


def fields_of(exc: RequestInvalid) -> list[tuple]:
    return [e.field for e in exc.errors]


def test_the_radius_is_the_papers_scaled_by_the_square_root_of_the_dimension():
    assert paper_radius(128 * 128 * 3) == pytest.approx(100.0)
    assert paper_radius(28 * 28) == pytest.approx(100 * math.sqrt(784 / 49152))  # 12.63 for the demo
    r = resolve_analysis("maximize", {"images": [{"png": png(), "label": 1}], "judge": "none"}, preset="tiny")
    assert r.settings["eps"] == pytest.approx(paper_radius(16 * 16 * 3))
    assert r.settings["step_size"] == pytest.approx(2.5 * r.settings["eps"] / 7)
    assert r.settings["attack_steps"] == 7 and "sqrt" in r.settings["eps_rule"]


def test_defaults_are_written_into_the_settings():
    r = resolve_analysis("compare", {"labels": ["red", 2]}, preset="tiny")
    assert r.settings["labels"] == [0, 2] and r.settings["seeds"] == [0, 1]
    assert [a["name"] for a in r.settings["arms"]] == ["none", "vanilla", "robust"]
    assert r.settings["arms"][1] == {"name": "vanilla", "method": "vanilla", "scale": 0.5}
    assert r.settings["steps"] == "10" and r.settings["sampler"] == "ddpm"
    assert default_arm_names(get_preset("demo")) == ["none", "vanilla", "robust"]
    g = resolve_analysis("gradients", {}, preset="demo", check_weights=False)
    assert g.settings["inputs"] == {"heldout": {"data": "mnist", "count": None, "seed": 0}}
    assert g.settings["timesteps"] == [0, 100, 200, 400, 600]
    capped = resolve_analysis("gradients", {}, preset="demo", check_weights=False,
                              limits=AnalysisLimits(max_images=100))
    assert capped.settings["inputs"]["heldout"] == {"data": "mnist", "count": None, "seed": 0, "limit": 100}


@pytest.mark.parametrize("kind,fields,where", [
    ("gradients", {"classifiers": ["robust", "sharp"]}, ("classifiers", 1)),
    ("gradients", {"images": [{"png": png(), "label": 9}]}, ("images", 0, "label")),
    ("gradients", {"images": [{"png": png()}]}, ("images", 0, "label")),
    ("gradients", {"images": [{"png": b"\x89PNG\r\n\x1a\nbroken", "label": 1}]}, ("images", 0, "png")),
    ("gradients", {"images": [{"png": b"GIF89a....", "label": 1}]}, ("images", 0, "png")),
    ("gradients", {"images": [{"png": png(size=32), "label": 1}]}, ("images", 0, "png")),
    ("gradients", {"images": [{"png": png(), "label": 1}] * 3}, ("images",)),
    ("gradients", {"timesteps": [0, 1000]}, ("timesteps", 1)),
    ("gradients", {"labels": [1]}, ("labels",)),
    ("maximize", {"images": [{"png": png(), "label": 1}], "targets": [7]}, ("targets", 0)),
    ("maximize", {"images": [{"png": png(), "label": 1}], "judge": "/etc/passwd"}, ("judge",)),
    ("maximize", {"images": [{"png": png(), "label": 1}], "eps": -1}, ("eps",)),
    ("trajectory", {"labels": [1], "frames": 11, "steps": "10"}, ("frames",)),
    ("trajectory", {}, ("labels",)),
    ("compare", {"labels": [1, 5]}, ("labels", 1)),
    ("compare", {"labels": [1], "arms": ["robust", "fancy"]}, ("arms", 1)),
    ("compare", {"labels": [1], "arms": ["robust=-2"]}, ("arms", 0)),
    ("compare", {"labels": [1] * 5}, ("labels",)),
    ("sweep", {"methods": ["none", "sharp"]}, ("methods", 1)),
])
def test_bad_input_is_refused_naming_the_field(kind, fields, where):
    limits = AnalysisLimits(max_uploads=2, max_images=12)
    with pytest.raises(RequestInvalid) as info:
        resolve_analysis(kind, fields, preset="tiny", limits=limits)
    assert where in fields_of(info.value), info.value.errors


def test_unknown_kind_and_preset_are_named():
    with pytest.raises(RequestInvalid) as info:
        resolve_analysis("saliency", {}, preset="tiny")
    assert fields_of(info.value) == [("kind",)]
    with pytest.raises(RequestInvalid) as info:
        resolve_analysis("compare", {"labels": [1]}, preset="nope")
    assert fields_of(info.value) == [("preset",)]


def test_an_upload_is_named_by_the_hash_of_its_normalised_png():
    data = png()
    a = resolve_analysis("gradients", {"images": [{"png": data, "label": 1}]}, preset="tiny")
    rgba = np.concatenate([np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8),
                           np.full((16, 16, 1), 255, np.uint8)], -1)
    b = resolve_analysis("gradients", {"images": [{"png": encode_png(rgba), "label": 1}]}, preset="tiny")
    assert a.uploads[0].sha256 == b.uploads[0].sha256  # the same pixels, whatever the file's mode
    assert a.settings["inputs"] == {"uploads": [{"sha256": a.uploads[0].sha256, "label": 1}]}


def test_every_kind_resolves_and_names_its_command():
    assert set(kinds.names()) == {"gradients", "maximize", "trajectory", "compare", "sweep"}
    assert kinds.get("sweep").command == "rguide sweep"


def test_heldout_picks_depend_only_on_count_and_seed():
    a = heldout_indices(500, 10, 3)
    assert heldout_indices(500, 20, 3)[:10] == a and len(set(a)) == 10
    assert heldout_indices(500, 10, 4) != a


def test_minmax_and_grids():
    assert render.minmax(np.array([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert (render.minmax(np.zeros(4)) == 0.5).all()
    cell = np.zeros((8, 8, 1), np.uint8)
    pic = render.render(render.Grid([[cell, None], [cell, cell]], title="t", col_headers=["a", "b"],
                                    row_labels=["r1", "r2"], col_footers=["f", "g"]))
    assert pic.ndim == 3 and pic.shape[2] == 3 and pic.dtype == np.uint8
