"""ADM-compatible architectures: exact parameter counts, key names, attention layouts, embeddings."""
import gc
import math

import pytest
import torch

from model_core.checkpoints import CheckpointMismatchError, CheckpointNotFoundError, load_weights, save_weights
from model_core.presets import get_preset
from model_core.unet import (AttentionPool2d, QKVAttention, QKVAttentionLegacy, classifier_from_config,
                             timestep_embedding, unet_from_config)

IN128 = get_preset("imagenet128")


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_imagenet128_parameter_counts_and_keys_match_the_official_checkpoints():
    with torch.device("meta"):
        unet = unet_from_config(IN128.diffusion["model"])
        clf = classifier_from_config(IN128.classifiers["robust"]["model"])
    assert count(unet) == 421_529_606
    assert count(clf) == 42_568_040
    keys = set(unet.state_dict())
    for k in ["label_emb.weight", "time_embed.0.weight", "time_embed.2.bias", "input_blocks.0.0.weight",
              "input_blocks.1.0.in_layers.0.weight", "input_blocks.3.0.in_layers.2.weight",
              "middle_block.1.qkv.weight", "middle_block.1.proj_out.weight", "middle_block.2.emb_layers.1.weight",
              "output_blocks.14.0.skip_connection.weight", "output_blocks.2.2.in_layers.2.weight", "out.2.weight"]:
        assert k in keys, k
    assert not any(k.startswith("output_blocks.15") for k in keys)  # 5 levels x 3 blocks
    assert unet.state_dict()["out.2.weight"].shape == (6, 256, 3, 3)  # learned sigma: 2C outputs
    ckeys = set(clf.state_dict())
    for k in ["out.2.positional_embedding", "out.2.qkv_proj.weight", "out.2.c_proj.weight", "out.0.weight",
              "input_blocks.0.0.weight", "middle_block.1.qkv.weight"]:
        assert k in ckeys, k
    assert clf.state_dict()["out.2.positional_embedding"].shape == (512, 65)  # 8x8 tokens + the mean token
    assert clf.state_dict()["out.2.c_proj.weight"].shape == (1000, 512, 1)


def test_cifar10_classifier_config_of_the_appendix():
    with torch.device("meta"):
        clf = classifier_from_config(get_preset("cifar10").classifiers["vanilla"]["model"])
    assert clf.state_dict()["out.2.c_proj.weight"].shape[0] == 10
    assert clf.state_dict()["input_blocks.0.0.weight"].shape == (32, 3, 3, 3)


@pytest.mark.slow
def test_imagenet128_models_save_and_reload_by_path(tmp_path):
    for role, build in (("diffusion", lambda: unet_from_config(IN128.diffusion["model"])),
                        ("classifier", lambda: classifier_from_config(IN128.classifiers["vanilla"]["model"]))):
        torch.manual_seed(0)
        model = build()
        path = save_weights(model, tmp_path / f"{role}.pt")
        probe = {k: v.flatten()[:5].clone() for k, v in list(model.state_dict().items())[::50]}
        n, keys = count(model), set(model.state_dict())
        del model
        gc.collect()
        fresh = build()
        load_weights(fresh, path, what=role)
        assert count(fresh) == n and set(fresh.state_dict()) == keys
        for k, v in probe.items():
            assert torch.equal(fresh.state_dict()[k].flatten()[:5], v), k
        del fresh
        path.unlink()
        gc.collect()


def test_mismatch_names_missing_unexpected_and_shape_differences(tmp_path):
    cfg = get_preset("tiny").classifiers["vanilla"]["model"]
    model = classifier_from_config(cfg)
    state = dict(model.state_dict())
    state.pop("out.2.c_proj.bias")
    state["extra.weight"] = torch.zeros(1)
    state["out.2.positional_embedding"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(classifier_from_config(cfg), tmp_path / "bad.pt", what="robust classifier")
    msg = str(err.value)
    assert "1 missing keys: out.2.c_proj.bias" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "out.2.positional_embedding: model (64, 65) vs file (3, 3)" in msg
    with pytest.raises(CheckpointNotFoundError, match="set RGUIDE_X to the file's path"):
        load_weights(model, tmp_path / "none.pt", what="x", env_var="RGUIDE_X")


def test_wrapped_and_half_precision_checkpoints_load(tmp_path):
    cfg = get_preset("tiny").classifiers["vanilla"]["model"]
    torch.manual_seed(1)
    model = classifier_from_config(cfg)
    torch.save({"ema": {k: v.half() for k, v in model.state_dict().items()}, "step": 3}, tmp_path / "w.pt")
    other = load_weights(classifier_from_config(cfg), tmp_path / "w.pt")
    w = other.state_dict()["input_blocks.0.0.weight"]
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, model.state_dict()["input_blocks.0.0.weight"], atol=1e-3, rtol=1e-3)


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0.0, 7.0])
    emb = timestep_embedding(t, 8)
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1, :4], torch.cos(7.0 * freqs))
    torch.testing.assert_close(emb[1, 4:], torch.sin(7.0 * freqs))
    assert emb[0, :4].eq(1).all() and emb[0, 4:].eq(0).all()


def _reference_attention(q, k, v):
    """Plain softmax(q k^T / sqrt(d)) v for (T, d) matrices."""
    w = torch.softmax(q @ k.t() / math.sqrt(q.shape[1]), dim=-1)
    return w @ v


def test_legacy_attention_is_head_major():
    """Legacy blocks reshape qkv to (heads, 3*ch) first: head h owns rows [h*3ch, (h+1)*3ch) as q|k|v."""
    heads, ch, T = 2, 3, 5
    qkv = torch.randn(1, 3 * heads * ch, T)
    out = QKVAttentionLegacy(heads)(qkv)
    for h in range(heads):
        block = qkv[0, h * 3 * ch:(h + 1) * 3 * ch]
        q, k, v = block[:ch].t(), block[ch:2 * ch].t(), block[2 * ch:].t()
        torch.testing.assert_close(out[0, h * ch:(h + 1) * ch].t(), _reference_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_new_order_attention_splits_q_k_v_first():
    """The pooling head (and use_new_attention_order) splits q|k|v first, then heads within each."""
    heads, ch, T = 2, 3, 5
    qkv = torch.randn(1, 3 * heads * ch, T)
    out = QKVAttention(heads)(qkv)
    q_all, k_all, v_all = qkv[0].chunk(3)
    for h in range(heads):
        sl = slice(h * ch, (h + 1) * ch)
        ref = _reference_attention(q_all[sl].t(), k_all[sl].t(), v_all[sl].t())
        torch.testing.assert_close(out[0, sl].t(), ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, QKVAttentionLegacy(heads)(qkv))


def test_attention_pool_reads_the_mean_token():
    pool = AttentionPool2d(2, 4, 2, 3)
    x = torch.randn(2, 4, 2, 2)
    out = pool(x)
    assert out.shape == (2, 3)
    tokens = torch.cat([x.flatten(2).mean(-1, keepdim=True), x.flatten(2)], -1) + pool.positional_embedding[None]
    full = pool.c_proj(pool.attention(pool.qkv_proj(tokens)))
    torch.testing.assert_close(out, full[:, :, 0])


def test_fp16_conversion_touches_only_block_convolutions():
    cfg = dict(get_preset("tiny").diffusion["model"])
    unet = unet_from_config(cfg)
    unet.convert_to_fp16()
    sd = unet.state_dict()
    assert sd["input_blocks.0.0.weight"].dtype == torch.float16
    assert sd["middle_block.1.qkv.weight"].dtype == torch.float16
    assert sd["input_blocks.1.0.in_layers.0.weight"].dtype == torch.float32  # GroupNorm stays float32
    assert sd["time_embed.0.weight"].dtype == torch.float32 and sd["label_emb.weight"].dtype == torch.float32
    assert sd["out.2.weight"].dtype == torch.float32 and sd["input_blocks.1.0.emb_layers.1.weight"].dtype == torch.float32


def test_small_digit_sized_models_run_forward_and_backward():
    unet = unet_from_config(dict(image_size=28, in_channels=1, num_classes=10, num_channels=32, num_res_blocks=1,
                                 channel_mult="1,2,2", learn_sigma=True, class_cond=True, attention_resolutions="7",
                                 num_heads=4, use_scale_shift_norm=True, resblock_updown=True))
    clf = classifier_from_config(dict(image_size=28, in_channels=1, num_classes=10, classifier_width=32,
                                      classifier_depth=1, channel_mult="1,2,2", classifier_attention_resolutions="7",
                                      num_head_channels=32))
    x = torch.randn(3, 1, 28, 28, requires_grad=True)
    t = torch.tensor([0, 500, 999])
    out = unet(x, t, y=torch.tensor([1, 2, 3]))
    assert out.shape == (3, 2, 28, 28)
    logits = clf(x, t)
    assert logits.shape == (3, 10)
    (out.sum() + logits.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_default_channel_mult_is_a_clear_error():
    with pytest.raises(ValueError, match="no default channel_mult for image_size 28"):
        unet_from_config(dict(image_size=28, num_channels=8, num_res_blocks=1))
