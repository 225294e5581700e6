"""The loaded-preset pipeline and `rguide sample`, on the seeded random `tiny` preset."""
import json
import shlex

import numpy as np
import pytest
from PIL import Image

from model_core.images import read_png_metadata
from model_core.pipeline import get_pipeline
from model_core.sampling.loop import Trajectory
from rguide.cli import main


@pytest.fixture(scope="module")
def pipe():
    return get_pipeline("tiny", "cpu")


def test_pipeline_is_cached_per_process(pipe):
    assert get_pipeline("tiny", "cpu") is pipe
    assert pipe.provenance()["weights"]["diffusion"] == "random-init:seed=1"


def test_image_is_the_same_alone_or_in_a_batch_of_eight(pipe):
    alone = pipe.sample_trajectories([Trajectory(2, 77, "robust", 1.0)], "10")
    batch = [Trajectory(i % 4, 500 + i, ("none", "vanilla", "robust")[i % 3], 0.7) for i in range(7)]
    batch.insert(3, Trajectory(2, 77, "robust", 1.0))
    together = pipe.sample_trajectories(batch, "10")
    assert together.shape[0] == 8
    a = np.asarray(pipe_to_uint8(alone[0]))
    b = np.asarray(pipe_to_uint8(together[3]))
    assert np.array_equal(a, b), f"max abs diff {np.abs(a.astype(int) - b).max()}"


def pipe_to_uint8(x):
    from model_core.images import to_uint8
    return to_uint8(x)


def test_pair_shares_x_T_and_noise_and_matches_single_runs(pipe):
    same = pipe.sample_pair([1, 3], [11, 12], {"robust": 0.0, "vanilla": 0.0}, "10")
    for r, v in zip(same["robust"], same["vanilla"]):
        assert np.array_equal(r, v)  # zero scale: only shared x_T and noise could make them equal
    pair = pipe.sample_pair([1, 3], [11, 12], {"robust": 1.0, "vanilla": 0.5}, "10")
    assert any(not np.array_equal(r, v) for r, v in zip(pair["robust"], pair["vanilla"]))
    robust_alone = pipe.sample([1, 3], [11, 12], "robust", 1.0, "10")
    vanilla_alone = pipe.sample([1, 3], [11, 12], "vanilla", 0.5, "10")
    for got, want in zip(pair["robust"] + pair["vanilla"], robust_alone + vanilla_alone):
        assert np.array_equal(got, want)


def test_pair_runs_both_trajectories_in_one_unet_forward(pipe, monkeypatch):
    batch_sizes = []
    orig = pipe.unet.forward

    def spy(x, t, y=None):
        batch_sizes.append(x.shape[0])
        return orig(x, t, y)

    monkeypatch.setattr(pipe.unet, "forward", spy)
    pipe.sample_pair([0, 1, 2], [1, 2, 3], None, "5")
    assert batch_sizes == [6] * 5


def test_pipeline_refuses_unknown_method_and_label(pipe):
    with pytest.raises(ValueError, match="out of range"):
        pipe.sample([9], [0], "robust")
    with pytest.raises(ValueError, match="not a method"):
        pipe.sample_trajectories([Trajectory(0, 0, "sharp", 1.0)])


def test_cli_sample_writes_pngs_and_a_sidecar_that_reproduces_them(tmp_path, capsys):
    out = tmp_path / "a"
    rc = main(["sample", "--preset", "tiny", "--labels", "1,green", "--guidance", "pair",
               "--scale", "robust=1.0,vanilla=0.5", "--steps", "8", "--seed", "5", "--out", str(out), "--no-progress"])
    assert rc == 0
    side = json.loads((out / "samples.json").read_text())
    assert [(r["label"], r["seed"], r["method"]) for r in side["images"]] == [
        (1, 5, "robust"), (1, 5, "vanilla"), (1, 6, "robust"), (1, 6, "vanilla")]
    first = out / side["images"][0]["file"]
    with Image.open(first) as im:
        assert im.size == (16, 16) and im.mode == "RGB"
    meta = read_png_metadata(first)
    assert meta["seed"] == "5" and meta["method"] == "robust" and json.loads(meta["provenance"])["preset"] == "tiny"
    # The recorded command regenerates byte-identical files.
    again = tmp_path / "b"
    argv = shlex.split(side["reproduce"].replace("--out OUT", f"--out {again}"))[1:] + ["--no-progress"]
    assert main(argv) == 0
    for rec in side["images"]:
        assert (again / rec["file"]).read_bytes() == (out / rec["file"]).read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--preset", "nope", "--labels", "1"], "preset 'nope' is unknown"),
    (["--preset", "tiny", "--labels", "4"], "out of range for preset 'tiny': use 0..3"),
    (["--preset", "tiny", "--labels", "1", "--steps", "ddim0"], "number of steps must be at least 1"),
    (["--preset", "tiny", "--labels", "1", "--scale", "fast=1"], "names method 'fast'"),
    # The API's rule (issue 10: one resolver): a scale must be positive; guidance 'none' means no guidance.
    (["--preset", "tiny", "--labels", "1", "--scale", "-1"], "--scale must be positive"),
    (["--preset", "tiny", "--labels", "1", "--scale", "0"], "--scale must be positive"),
    (["--preset", "tiny", "--labels", "1", "--guidance", "sharp"], "--guidance 'sharp' is not one of"),
    (["--preset", "imagenet128", "--labels", "1"], "weights not found at"),
])
def test_cli_sample_errors_are_clear(tmp_path, capsys, argv, message):
    assert main(["sample", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
