"""`rguide train-classifier` / `train-diffusion` on a tiny .npz: flags, --max-minutes, resume, clear errors."""
import json

import numpy as np
import pytest

from rguide.cli import main
from test_training import PROCESS, TINY_CLASSIFIER, TINY_UNET, tiny_data


@pytest.fixture()
def tiny_npz(tmp_path):
    ds = tiny_data(32)
    path = tmp_path / "squares.npz"
    np.savez(path, images=((ds.images.numpy() + 1) * 127.5).round().astype(np.uint8)[:, 0], labels=ds.labels.numpy())
    return path


@pytest.fixture()
def configs(tmp_path):
    (tmp_path / "clf.json").write_text(json.dumps(TINY_CLASSIFIER))
    (tmp_path / "unet.json").write_text(json.dumps(TINY_UNET))
    (tmp_path / "process.json").write_text(json.dumps(PROCESS))
    (tmp_path / "process_sigma.json").write_text(json.dumps({**PROCESS, "learn_sigma": True}))
    return tmp_path


@pytest.mark.slow
def test_train_classifier_cli_stops_on_max_minutes_and_resumes(tmp_path, tiny_npz, configs, capsys):
    out = tmp_path / "run"
    argv = ["train-classifier", "--data", str(tiny_npz), "--model-config", str(configs / "clf.json"),
            "--process-config", str(configs / "process.json"), "--robust", "--attack", "linf", "--eps", "0.1",
            "--step-size", "0.05", "--attack-steps", "2", "--steps", "3", "--batch-size", "8", "--seed", "5",
            "--out", str(out), "--no-progress"]
    # A zero budget stops after the first step, with a checkpoint.
    assert main(argv + ["--max-minutes", "0"]) == 0
    assert "run the same command to resume" in capsys.readouterr().out
    info = json.loads((out / "run.json").read_text())
    assert info["step"] == 1 and not info["finished"]
    cfg = info["config"]
    assert (cfg["robust"], cfg["attack"], cfg["eps"], cfg["step_size"], cfg["attack_steps"]) == (True, "linf", 0.1,
                                                                                                 0.05, 2)
    assert (cfg["lr_start"], cfg["lr_end"], cfg["weight_decay"]) == (3e-4, 6e-5, 0.05)  # the paper's defaults
    assert main(argv) == 0
    assert "finished 3 steps" in capsys.readouterr().out
    info = json.loads((out / "run.json").read_text())
    assert info["finished"] and info["resumed_at_steps"] == [1]
    assert (out / "model.pt").is_file()
    # The same command on a finished run changes nothing and says so.
    assert main(argv) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_train_diffusion_cli(tmp_path, tiny_npz, configs, capsys):
    out = tmp_path / "diff"
    assert main(["train-diffusion", "--data", str(tiny_npz), "--model-config", str(configs / "unet.json"),
                 "--process-config", str(configs / "process_sigma.json"), "--steps", "2", "--batch-size", "4",
                 "--ema-decay", "0.5", "--out", str(out), "--no-progress"]) == 0
    assert (out / "ema.pt").is_file() and (out / "model.pt").is_file()
    assert "finished 2 steps" in capsys.readouterr().out


@pytest.mark.parametrize("extra,msg", [
    ([], "--preset or --model-config"),
    (["--model-config", "MISSING"], "cannot read"),
    (["--model-config", "CLF", "--data", "/no/such.npz"], "no such file"),
    (["--model-config", "CLF", "--data", "NPZ", "--attack-steps", "0", "--robust"], "--attack-steps >= 1"),
    (["--preset", "nope", "--data", "NPZ"], "unknown"),
    (["--model-config", "CLF", "--data", "NPZ", "--t-power", "0"], "--t-power must be > 0"),
])
def test_train_cli_errors_are_clear(tmp_path, tiny_npz, configs, capsys, extra, msg):
    extra = [{"MISSING": str(tmp_path / "missing.json"), "CLF": str(configs / "clf.json"),
              "NPZ": str(tiny_npz)}.get(a, a) for a in extra]
    if "--data" not in extra and "--preset" not in extra:
        extra += ["--data", str(tiny_npz)]
    assert main(["train-classifier", "--out", str(tmp_path / "r"), "--no-progress"] + extra) == 2
    assert msg in capsys.readouterr().err


def test_train_cli_refuses_another_config_in_a_used_directory(tmp_path, tiny_npz, configs, capsys):
    base = ["train-classifier", "--data", str(tiny_npz), "--model-config", str(configs / "clf.json"),
            "--process-config", str(configs / "process.json"), "--steps", "1", "--batch-size", "4",
            "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(base) == 0
    assert main(base + ["--weight-decay", "0.1"]) == 2
    assert "different run" in capsys.readouterr().err


def test_train_feature_net_cli_records_the_accuracy_of_the_weights_as_stored(tmp_path, capsys):
    import torch

    from model_core.data import load_mnist
    from model_core.models.feature_net import classify_accuracy, load_feature_net

    out = tmp_path / "features.pt"
    assert main(["train-feature-net", "--data", "mnist", "--steps", "3", "--dtype", "float16", "--threads", "1",
                 "--out", str(out), "--no-progress"]) == 0
    blob = torch.load(out, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in blob["state_dict"].values() if v.is_floating_point())
    info = blob["info"]
    assert {"test_accuracy_fp32", "wall_seconds", "code_version", "torch"} <= set(info) and info["dtype"] == "float16"
    test = load_mnist("test")
    assert info["test_accuracy"] == classify_accuracy(load_feature_net(out), test.images, test.labels)
    assert f"held-out accuracy {info['test_accuracy']:.4f}" in capsys.readouterr().out


class _Payload:
    """Unpickling this calls os.system: what a crafted state.pt did under `rguide train-classifier --out DIR`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _argv(tiny_npz, configs, out):
    return ["train-classifier", "--data", str(tiny_npz), "--model-config", str(configs / "clf.json"),
            "--process-config", str(configs / "process.json"), "--steps", "2", "--batch-size", "8",
            "--out", str(out), "--no-progress"]


def test_a_crafted_state_file_does_not_run_and_is_refused(tmp_path, tiny_npz, configs, capsys):
    import torch

    out, marker = tmp_path / "run", tmp_path / "pwned"
    out.mkdir()
    torch.save({"model": {}, "optimizer": {}, "step": 1, "rng": _Payload(marker), "config": {}}, out / "state.pt")
    assert main(_argv(tiny_npz, configs, out)) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "code in the state file ran"
    assert "holds Python objects besides tensors" in err and "Traceback" not in err


def test_a_corrupt_state_file_is_a_clear_error(tmp_path, tiny_npz, configs, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.pt").write_bytes(b"\x80\x04 not a state")
    assert main(_argv(tiny_npz, configs, out)) == 2
    err = capsys.readouterr().err
    assert "cannot be read as a training state" in err and "weights_only" not in err and "Traceback" not in err


def test_a_resumed_state_loads_without_unpickling_anything(tmp_path, tiny_npz, configs):
    import torch

    out = tmp_path / "run"
    assert main(_argv(tiny_npz, configs, out) + ["--max-minutes", "0"]) == 0
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
    assert isinstance(state["rng"]["python"]["words"], torch.Tensor)
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    assert main(_argv(tiny_npz, configs, out)) == 0
