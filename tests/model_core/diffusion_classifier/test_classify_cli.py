"""``rguide classify`` and the argument errors of ``rguide robustness`` / ``rguide truth-max``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from model_core.data import load_dataset
from model_core.images import encode_png
from rguide.cli import main


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    ds = load_dataset("mnist", split="test")
    d = tmp_path_factory.mktemp("digits")
    paths = []
    for i in (0, 1):
        px = ((ds.images[i, 0].numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)[..., None]
        p = d / f"digit{i}_{int(ds.labels[i])}.png"
        p.write_bytes(encode_png(px))
        paths.append((p, int(ds.labels[i])))
    return paths


def test_classify_with_each_method(digits, capsys):
    files = [str(p) for p, _ in digits]
    assert main(["classify", *files, "--preset", "demo", "--method", "vanilla", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["prediction"] for r in out] == [y for _, y in digits]
    assert abs(sum(out[0]["probabilities"]) - 1) < 1e-4 and out[0]["network_evaluations"] == 1
    assert main(["classify", files[0], "--preset", "demo", "--method", "diffusion", "--schedule", "3:2,6",
                 "--json", "--no-progress"]) == 0
    r = json.loads(capsys.readouterr().out)[0]
    assert r["network_evaluations"] == 3 * 10 + 3 * 2
    assert sum(p > 0 for p in r["probabilities"]) <= 2          # eliminated classes have probability 0
    assert r["settings"]["schedule"] == "3:2,6"


def test_classify_refuses_bad_images_and_settings(digits, tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    assert main(["classify", str(bad), "--preset", "demo", "--method", "vanilla"]) == 2
    assert "not a PNG" in capsys.readouterr().err
    big = tmp_path / "big.png"
    big.write_bytes(encode_png(np.zeros((32, 32, 1), np.uint8)))
    assert main(["classify", str(big), "--preset", "demo"]) == 2
    assert "28x28" in capsys.readouterr().err
    assert main(["classify", str(digits[0][0]), "--preset", "demo", "--schedule", "5:11,20"]) == 2
    assert "--schedule" in capsys.readouterr().err
    assert main(["robustness", "--preset", "demo", "--attacks", "pgd,cw", "--out", str(tmp_path / "r")]) == 2
    assert "--attacks" in capsys.readouterr().err
    assert main(["robustness", "--preset", "demo", "--diffusion-gradients", "fixed,eot", "--out",
                 str(tmp_path / "r")]) == 2
    assert "--eot" in capsys.readouterr().err                       # eot rows need K draws per gradient
    assert main(["robustness", "--preset", "demo", "--diffusion-gradients", "exact", "--eot", "2", "--out",
                 str(tmp_path / "r")]) == 2
    assert "--diffusion-gradients" in capsys.readouterr().err
    assert main(["truth-max", "--preset", "demo", "--attack", "autoattack", "--out", str(tmp_path / "t")]) == 2
    assert "--attack" in capsys.readouterr().err
