"""``rguide viz ...`` and ``rguide viz reproduce`` on the tiny preset."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from model_core.images import encode_png
from rguide.cli import main


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    torch.set_num_threads(1)  # the test machine's cores are shared; more threads only contend


def write_pngs(folder, n, size=16):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        p.write_bytes(encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
        paths.append(str(p))
    return ",".join(paths)


def test_compare_writes_a_sheet_and_reproduce_says_identical(tmp_path, capsys):
    out = tmp_path / "sheet"
    assert main(["viz", "compare", "--preset", "tiny", "--labels", "1,blue", "--seed", "4", "--steps", "4",
                 "--arms", "none,robust=2", "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert doc["settings"]["seeds"] == [4, 5] and doc["settings"]["labels"] == [1, 2]
    assert doc["files"].keys() == {"compare.png"} and doc["command"] == "rguide viz compare"
    with Image.open(out / "compare.png") as im:
        assert im.width > 2 * 64 and im.height > 2 * 64  # two arms x two samples, enlarged cells
    capsys.readouterr()
    assert main(["viz", "reproduce", str(out / "compare.json"), "--no-progress"]) == 0
    assert "identical" in capsys.readouterr().out
    assert (out / "reproduced" / "compare.png").read_bytes() == (out / "compare.png").read_bytes()


def test_gradients_from_files_copies_the_inputs_and_reproduces_from_them(tmp_path, capsys):
    out = tmp_path / "g"
    images = write_pngs(tmp_path, 2)
    assert main(["viz", "gradients", "--preset", "tiny", "--images", images, "--labels", "0,3",
                 "--timesteps", "0,300", "--buckets", "2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| 0-499 | robust - vanilla (paired) |" in printed
    doc = json.loads((out / "gradients.json").read_text())
    assert [u["label"] for u in doc["inputs"]] == [0, 3]
    for ref in doc["inputs"]:
        assert (out / ref["file"]).is_file()
    assert main(["viz", "reproduce", str(out / "gradients.json"), "--out", str(tmp_path / "again"),
                 "--no-progress"]) == 0


def test_maximize_and_trajectory_run_from_the_command_line(tmp_path):
    images = write_pngs(tmp_path, 2)
    assert main(["viz", "maximize", "--preset", "tiny", "--images", images, "--targets", "1,2", "--judge", "none",
                 "--eps", "3", "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "m" / "maximize.json").read_text())
    assert doc["settings"]["targets"] == [1, 2] and doc["settings"]["step_size"] == pytest.approx(2.5 * 3 / 7)
    assert main(["viz", "trajectory", "--preset", "tiny", "--labels", "2", "--steps", "5", "--frames", "3",
                 "--out", str(tmp_path / "t"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "t" / "trajectory.json").read_text())["summary"]["frame_steps"] == [0, 2, 4]


@pytest.mark.parametrize("argv,flag", [
    (["viz", "gradients", "--classifiers", "robust,sharp"], "--classifiers (item 2)"),
    (["viz", "compare", "--labels", "1,9"], "--labels (item 2)"),
    (["viz", "compare", "--labels", "1", "--arms", "robust,fancy"], "--arms (item 2)"),
    (["viz", "trajectory", "--labels", "1", "--frames", "50"], "--frames"),
    (["viz", "maximize", "--judge", "/no/such/file", "--images", "IMAGES"], "--judge"),
    (["viz", "gradients", "--images", "IMAGES", "--labels", "1,2,3"], "--labels gives 3 labels for 2"),
    (["viz", "gradients", "--images", "IMAGES", "--labels", "1,7"], "--labels (item 2)"),
])
def test_bad_flags_are_named(tmp_path, capsys, argv, flag):
    argv = [a.replace("IMAGES", write_pngs(tmp_path, 2)) for a in argv]
    assert main(argv + ["--preset", "tiny", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert flag in err, err
    assert not (tmp_path / "x").exists()


def test_reproduce_reports_a_difference_and_exits_1(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["viz", "compare", "--preset", "tiny", "--labels", "1", "--steps", "3", "--out", str(out),
                 "--no-progress"]) == 0
    doc = json.loads((out / "compare.json").read_text())
    doc["files"]["compare.png"] = "0" * 64
    (out / "compare.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["viz", "reproduce", str(out / "compare.json"), "--no-progress"]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
