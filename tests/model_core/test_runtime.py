"""The speed settings (model_core/runtime.py): parsing, their effect on the networks, and that all are off by default."""
import pytest
import torch

from model_core import runtime, settings
from model_core.models.adm import unet_from_config

SMALL = dict(image_size=8, num_classes=4, num_channels=32, num_res_blocks=1, channel_mult="1,2", learn_sigma=True,
             class_cond=True, attention_resolutions="4", num_heads=2, use_scale_shift_norm=True, resblock_updown=True)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (settings.CHANNELS_LAST, settings.AUTOCAST, settings.COMPILE):
        monkeypatch.delenv(name, raising=False)


def test_everything_is_off_by_default():
    module = torch.nn.Conv2d(1, 1, 1)
    assert runtime.prepare(module) is module
    assert runtime.describe() == runtime.DEFAULTS == {"channels_last": False, "autocast": "off", "compile": "off"}
    with runtime.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("name,value,match", [
    (settings.CHANNELS_LAST, "maybe", "RGUIDE_CHANNELS_LAST='maybe': use 1 or 0"),
    (settings.AUTOCAST, "int8", "RGUIDE_AUTOCAST='int8' is not one of off, bf16, fp16"),
    (settings.COMPILE, "fast", "RGUIDE_COMPILE='fast' is not one of off, default, reduce-overhead, max-autotune"),
])
def test_a_malformed_value_names_the_variable(monkeypatch, name, value, match):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        runtime.describe()


def test_fp16_autocast_needs_cuda(monkeypatch):
    monkeypatch.setenv(settings.AUTOCAST, "fp16")
    with pytest.raises(ValueError, match="RGUIDE_AUTOCAST=fp16 needs a CUDA device"):
        runtime.autocast("cpu")


def test_channels_last_and_bf16_autocast_take_effect(monkeypatch):
    torch.manual_seed(0)
    unet = unet_from_config(SMALL).eval()
    with torch.no_grad():  # the zero-initialised output layers would hide any change
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.tensor([0, 1])
    with torch.no_grad():
        reference = unet(x, t, y)
    monkeypatch.setenv(settings.CHANNELS_LAST, "1")
    monkeypatch.setenv(settings.AUTOCAST, "bf16")
    prepared = runtime.prepare(unet)
    assert prepared.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), runtime.autocast("cpu"):
        assert torch.is_autocast_enabled("cpu")
        out = prepared(x, t, y)
    assert out.dtype == torch.float32  # the networks hand back the caller's dtype
    assert 0 < (out - reference).abs().max() < 0.1  # bf16 moves the output, by its ~3 significant digits
    assert runtime.describe() == {"channels_last": True, "autocast": "bf16", "compile": "off"}


def test_a_pipeline_records_its_speed_settings(monkeypatch):
    from model_core.pipeline import Pipeline
    from model_core.presets import get_preset

    monkeypatch.setenv(settings.CHANNELS_LAST, "1")
    pipe = Pipeline(get_preset("tiny"), "cpu")
    assert pipe.provenance()["runtime"]["channels_last"] is True
    assert pipe.unet.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.providers["robust"].module.input_blocks[0][0].weight.is_contiguous(
        memory_format=torch.channels_last)
