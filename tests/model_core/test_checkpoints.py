"""Loading weights by path: strictness, clear errors, wrapped and half-precision files, saving."""
import json

import pytest
import torch

from model_core.checkpoints import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointReadError,
    load_weights,
    read_metadata,
    save_weights,
)
from model_core.models.adm import classifier_from_config, unet_from_config

CLASSIFIER = dict(image_size=8, num_classes=4, classifier_width=32, classifier_depth=1, channel_mult="1,2",
                  classifier_attention_resolutions="4", num_head_channels=32)
UNET = dict(image_size=8, num_classes=4, num_channels=32, num_res_blocks=1, channel_mult="1,2", learn_sigma=True,
            class_cond=True, attention_resolutions="4", num_heads=2, use_scale_shift_norm=True, resblock_updown=True)


def build(seed=0):
    torch.manual_seed(seed)
    return classifier_from_config(CLASSIFIER)


def same_weights(a, b, **tol):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k].float(), sb[k].float(), **tol)


def test_round_trip_by_path_restores_every_tensor(tmp_path):
    model = build(0)
    path = save_weights(model, tmp_path / "sub" / "clf.pt")
    fresh = build(1)
    assert not torch.equal(fresh.out[2].positional_embedding, model.out[2].positional_embedding)
    assert load_weights(fresh, path, what="classifier") is fresh
    same_weights(fresh, model, atol=0, rtol=0)
    raw = torch.load(path, weights_only=True)  # a plain state dict, as the public ADM code expects
    assert isinstance(raw, dict) and all(isinstance(v, torch.Tensor) for v in raw.values())
    assert not list(tmp_path.glob("sub/.*tmp"))


def test_mismatch_names_missing_unexpected_and_shape_differences(tmp_path):
    state = dict(build().state_dict())
    state.pop("out.2.c_proj.bias")
    state["extra.weight"] = torch.zeros(1)
    state["out.2.positional_embedding"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    target = build(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(target, tmp_path / "bad.pt", what="robust classifier")
    msg = str(err.value)
    assert f"robust classifier weights in {tmp_path / 'bad.pt'} do not fit" in msg
    assert "1 missing keys: out.2.c_proj.bias" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "1 shape differences: out.2.positional_embedding: model (64, 17) vs file (3, 3)" in msg
    assert isinstance(err.value, ValueError)
    for k, v in target.state_dict().items():  # a refused file changes nothing
        assert torch.equal(v, before[k]), k


def test_long_difference_lists_are_truncated_with_counts(tmp_path):
    # A diffusion model's weights offered as a classifier: hundreds of differences.
    torch.save(unet_from_config(UNET).state_dict(), tmp_path / "unet.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(build(), tmp_path / "unet.pt", what="vanilla classifier")
    msg = str(err.value)
    n_unexpected = len(set(unet_from_config(UNET).state_dict()) - set(build().state_dict()))
    assert n_unexpected > 20
    assert f"{n_unexpected} unexpected keys: " in msg and f"... and {n_unexpected - 20} more" in msg
    listed = msg.split("unexpected keys: ")[1].split(", ... and")[0].split(", ")
    assert len(listed) == 20 and len(msg) < 6000


def test_data_parallel_prefix_gets_a_hint(tmp_path):
    torch.save({f"module.{k}": v for k, v in build().state_dict().items()}, tmp_path / "ddp.pt")
    with pytest.raises(CheckpointMismatchError, match="'module.' prefix"):
        load_weights(build(), tmp_path / "ddp.pt")


def test_missing_file_names_the_path_and_the_variable(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as err:
        load_weights(build(), tmp_path / "none.pt", what="robust classifier", env_var="RGUIDE_IMAGENET128_ROBUST")
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "none.pt") in str(err.value)
    assert "set RGUIDE_IMAGENET128_ROBUST to the file's path" in str(err.value)
    with pytest.raises(CheckpointNotFoundError, match="is a directory"):
        load_weights(build(), tmp_path, what="x")


@pytest.mark.parametrize("content, message", [("html", "could not be read as a torch file"),
                                              ("truncated", "could not be read as a torch file"),
                                              ("list", "is not a state dict")])
def test_unreadable_or_foreign_files_are_refused_clearly(tmp_path, content, message):
    path = tmp_path / "w.pt"
    if content == "html":
        path.write_bytes(b"<html>404</html>")
    elif content == "truncated":
        torch.save(build().state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointReadError, match=message):
        load_weights(build(), path)


def test_training_states_with_python_objects_are_not_unpickled(tmp_path):
    import numpy as np

    torch.save({"model": build().state_dict(), "rng": np.random.get_state()}, tmp_path / "state.pt")
    with pytest.raises(CheckpointReadError, match="Python objects besides tensors"):
        load_weights(build(), tmp_path / "state.pt", what="diffusion model")


def test_wrapped_checkpoints_prefer_ema_then_model_then_state_dict(tmp_path):
    ema, raw, other = build(0), build(1), build(2)
    torch.save({"model": raw.state_dict(), "ema": ema.state_dict(), "state_dict": other.state_dict(), "step": 3},
               tmp_path / "all.pt")
    same_weights(load_weights(build(5), tmp_path / "all.pt"), ema, atol=0, rtol=0)
    torch.save({"ema": None, "state_dict": other.state_dict(), "model": raw.state_dict()}, tmp_path / "no_ema.pt")
    same_weights(load_weights(build(5), tmp_path / "no_ema.pt"), raw, atol=0, rtol=0)
    torch.save({"state_dict": other.state_dict(), "optimizer": {"lr": 1.0}}, tmp_path / "sd.pt")
    same_weights(load_weights(build(5), tmp_path / "sd.pt"), other, atol=0, rtol=0)


def test_half_precision_file_loads_into_float32_model(tmp_path):
    model = build(1)
    torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "w16.pt")
    loaded = load_weights(build(2), tmp_path / "w16.pt")
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values())
    same_weights(loaded, model, atol=1e-3, rtol=1e-3)


def test_float32_file_loads_into_fp16_converted_model(tmp_path):
    model = build(1)
    save_weights(model, tmp_path / "w32.pt")
    target = classifier_from_config(dict(CLASSIFIER, classifier_use_fp16=True)).convert_to_fp16()
    load_weights(target, tmp_path / "w32.pt")
    sd = target.state_dict()
    assert sd["input_blocks.0.0.weight"].dtype == torch.float16  # the model's dtype wins
    assert sd["out.2.positional_embedding"].dtype == torch.float32
    same_weights(target, model, atol=1e-3, rtol=1e-3)


def test_saved_fp16_model_loads_back_into_float32(tmp_path):
    model = classifier_from_config(dict(CLASSIFIER, classifier_use_fp16=True)).convert_to_fp16()
    path = save_weights(model, tmp_path / "mixed.pt")
    assert torch.load(path, weights_only=True)["input_blocks.0.0.weight"].dtype == torch.float16
    fresh = load_weights(build(3), path)
    assert fresh.dtype == torch.float32
    same_weights(fresh, model, atol=0, rtol=0)


def test_metadata_goes_beside_the_weights(tmp_path):
    model = build()
    path = save_weights(model, tmp_path / "clf.pt", metadata={"seed": 7, "model": CLASSIFIER})
    meta = json.loads((tmp_path / "clf.pt.json").read_text())
    assert meta == read_metadata(path)
    assert meta["seed"] == 7 and meta["model"] == CLASSIFIER
    info = meta["weights_file"]
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["tensors"] == len(model.state_dict()) and info["torch"] == torch.__version__
    assert len(info["sha256"]) == 64
    assert read_metadata(save_weights(model, tmp_path / "bare.pt")) is None
