"""ADM-compatible architectures: exact layout of the official 128x128 models, attention layouts, fp16, configs."""
import gc
import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from model_core.checkpoints import load_weights, save_weights
from model_core.models.nn import CONV_TYPES, GroupNorm32, timestep_embedding
from model_core.models.adm import (
    AttentionBlock,
    AttentionPool2d,
    ResBlock,
    EncoderUNetModel,
    QKVAttention,
    QKVAttentionLegacy,
    UNetModel,
    classifier_from_config,
    create_classifier,
    create_unet,
    unet_from_config,
)

# The published flags of 128x128_diffusion.pt and 128x128_classifier.pt (the robust classifier shares the latter's).
IMAGENET128_UNET = dict(image_size=128, num_channels=256, num_res_blocks=2, channel_mult="1,1,2,3,4",
                        learn_sigma=True, class_cond=True, attention_resolutions="32,16,8", num_heads=4,
                        num_head_channels=-1, num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
                        resblock_updown=True, use_fp16=True, use_new_attention_order=False)
IMAGENET128_CLASSIFIER = dict(image_size=128, classifier_width=128, classifier_depth=2,
                              classifier_attention_resolutions="32,16,8", classifier_use_scale_shift_norm=True,
                              classifier_resblock_updown=True, classifier_pool="attention", classifier_use_fp16=True,
                              num_head_channels=64)
# sha256 over "key:shape" lines in state-dict order, computed once from the public guided-diffusion
# UNetModel / EncoderUNetModel built with the flags above: equal digests mean identical keys, order and shapes.
ADM_UNET_LAYOUT = (493, "9ce694868e58ed287c97f99a160afb034d7d81c4294412847eafcf60029cfced")
ADM_CLASSIFIER_LAYOUT = (221, "5a73e4e9ec196bd3d7388d855e6c94aa242914ce87d323b4d4c0c9a42e36bd4c")

DIGITS_UNET = dict(image_size=28, in_channels=1, num_classes=10, num_channels=32, num_res_blocks=1,
                   channel_mult="1,2,2", learn_sigma=True, class_cond=True, attention_resolutions="7", num_heads=4,
                   use_scale_shift_norm=True, resblock_updown=True)
DIGITS_CLASSIFIER = dict(image_size=28, in_channels=1, num_classes=10, classifier_width=32, classifier_depth=1,
                         channel_mult="1,2,2", classifier_attention_resolutions="7", num_head_channels=32)
# Smaller still, for the paths that are slow on a CPU (half-precision convolutions).
SMALL_UNET = dict(image_size=8, num_classes=4, num_channels=32, num_res_blocks=1, channel_mult="1,2", learn_sigma=True,
                  class_cond=True, attention_resolutions="4", num_heads=2, use_scale_shift_norm=True,
                  resblock_updown=True)
SMALL_CLASSIFIER = dict(image_size=8, num_classes=4, classifier_width=32, classifier_depth=1, channel_mult="1,2",
                        classifier_attention_resolutions="4", num_head_channels=32)


def count(m):
    return sum(p.numel() for p in m.parameters())


def layout(m):
    sd = m.state_dict()
    return len(sd), hashlib.sha256("".join(f"{k}:{tuple(v.shape)}\n" for k, v in sd.items()).encode()).hexdigest()


def perturb(model, seed=0):
    """Give zero-initialised layers random weights, so outputs and gradients are not trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


# -- the official 128x128 models ----------------------------------------------------
def test_imagenet128_models_have_the_official_parameter_counts_and_layout():
    with torch.device("meta"):
        unet = unet_from_config(IMAGENET128_UNET)
        clf = classifier_from_config(IMAGENET128_CLASSIFIER)
    assert count(unet) == 421_529_606
    assert count(clf) == 42_568_040
    assert layout(unet) == ADM_UNET_LAYOUT
    assert layout(clf) == ADM_CLASSIFIER_LAYOUT

    sd = unet.state_dict()
    expected = {"label_emb.weight": (1000, 1024), "time_embed.0.weight": (1024, 256), "time_embed.2.bias": (1024,),
                "input_blocks.0.0.weight": (256, 3, 3, 3),
                "middle_block.1.qkv.weight": (3072, 1024, 1), "middle_block.1.proj_out.weight": (1024, 1024, 1),
                "output_blocks.0.0.skip_connection.weight": (1024, 2048, 1, 1),
                "output_blocks.2.2.in_layers.2.weight": (1024, 1024, 3, 3), "out.2.weight": (6, 256, 3, 3)}
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "input_blocks.3.0.h_upd.op.weight" not in sd  # resblock down-sampling by average pooling: no weights
    assert max(int(k.split(".")[1]) for k in sd if k.startswith("output_blocks.")) == 14  # 5 levels x 3
    assert max(int(k.split(".")[1]) for k in sd if k.startswith("input_blocks.")) == 14  # 1 + 5x2 + 4 downs

    csd = clf.state_dict()
    for key, shape in {"out.2.positional_embedding": (512, 65),  # 8x8 tokens + the mean token
                       "out.2.qkv_proj.weight": (1536, 512, 1), "out.2.c_proj.weight": (1000, 512, 1),
                       "out.0.weight": (512,), "input_blocks.0.0.weight": (128, 3, 3, 3),
                       "middle_block.1.qkv.weight": (1536, 512, 1)}.items():
        assert tuple(csd[key].shape) == shape, key
    assert not any(k.startswith(("label_emb", "output_blocks")) for k in csd)


def test_attention_heads_of_the_official_models():
    with torch.device("meta"):
        unet = unet_from_config(IMAGENET128_UNET)
        clf = classifier_from_config(IMAGENET128_CLASSIFIER)
    attn = [m for m in unet.modules() if isinstance(m, AttentionBlock)]
    assert len(attn) == 2 * 3 + 1 + 3 * 3  # input (2 per level at 32/16/8), middle, output (3 per level)
    assert {m.num_heads for m in attn} == {4}
    assert all(isinstance(m.attention, QKVAttentionLegacy) for m in attn)
    cattn = [m for m in clf.modules() if isinstance(m, AttentionBlock)]
    assert sorted({m.channels // m.num_heads for m in cattn}) == [64]  # 64 channels per head everywhere
    assert isinstance(clf.out[2].attention, QKVAttention) and clf.out[2].num_heads == 8


def test_num_heads_upsample_applies_to_the_decoder_only():
    cfg = dict(DIGITS_UNET, num_heads=2, num_heads_upsample=4)
    unet = unet_from_config(cfg)
    enc = [m.num_heads for m in list(unet.input_blocks.modules()) + list(unet.middle_block.modules())
           if isinstance(m, AttentionBlock)]
    dec = [m.num_heads for m in unet.output_blocks.modules() if isinstance(m, AttentionBlock)]
    assert set(enc) == {2} and set(dec) == {4} and len(dec) == 2


def test_num_head_channels_overrides_num_heads():
    unet = unet_from_config(dict(DIGITS_UNET, num_head_channels=16))
    assert {m.num_heads for m in unet.modules() if isinstance(m, AttentionBlock)} == {4}  # 64 channels / 16


def test_the_imagenet128_preset_describes_the_official_models():
    from model_core.presets import get_preset

    preset = get_preset("imagenet128")
    with torch.device("meta"):
        assert layout(unet_from_config(preset.diffusion["model"])) == ADM_UNET_LAYOUT
        for method in ("vanilla", "robust"):
            assert layout(classifier_from_config(preset.classifiers[method]["model"])) == ADM_CLASSIFIER_LAYOUT


@pytest.mark.slow
def test_imagenet128_models_save_and_reload_by_path(tmp_path):
    for role, build in (("diffusion", lambda: unet_from_config(IMAGENET128_UNET)),
                        ("classifier", lambda: classifier_from_config(IMAGENET128_CLASSIFIER))):
        torch.manual_seed(0)
        model = build()
        path = save_weights(model, tmp_path / f"{role}.pt")
        probe = {k: v.flatten()[:5].clone() for k, v in list(model.state_dict().items())[::40]}
        n, lay = count(model), layout(model)
        del model
        gc.collect()
        torch.manual_seed(1)  # a different initialisation, so only loading can restore the probe
        fresh = build()
        load_weights(fresh, path, what=role)
        assert count(fresh) == n and layout(fresh) == lay
        sd = fresh.state_dict()
        for k, v in probe.items():
            assert torch.equal(sd[k].flatten()[:5], v), k
        del fresh, sd
        path.unlink()
        gc.collect()


# -- timestep embedding ----------------------------------------------------------------
def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0, 7])
    emb = timestep_embedding(t, 8)
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1, :4], torch.cos(7.0 * freqs))
    torch.testing.assert_close(emb[1, 4:], torch.sin(7.0 * freqs))
    assert emb[0, :4].eq(1).all() and emb[0, 4:].eq(0).all()


def test_timestep_embedding_odd_dim_and_fractional_steps():
    emb = timestep_embedding(torch.tensor([2.5]), 7, max_period=100)
    assert emb.shape == (1, 7) and emb[0, 6] == 0
    freqs = torch.exp(-math.log(100) * torch.arange(3) / 3)
    torch.testing.assert_close(emb[0, :3], torch.cos(2.5 * freqs))


# -- attention layouts -------------------------------------------------------------------
def _softmax_attention(q, k, v):
    """Plain softmax(q k^T / sqrt(d)) v for (T, d) matrices."""
    return torch.softmax(q @ k.t() / math.sqrt(q.shape[1]), dim=-1) @ v


def _legacy_reference(qkv, heads):
    """Head h owns rows [h*3ch, (h+1)*3ch) of qkv, split into q | k | v."""
    ch = qkv.shape[0] // (3 * heads)
    out = []
    for h in range(heads):
        block = qkv[h * 3 * ch:(h + 1) * 3 * ch]
        out.append(_softmax_attention(block[:ch].t(), block[ch:2 * ch].t(), block[2 * ch:].t()).t())
    return torch.cat(out)


def _new_order_reference(qkv, heads):
    """Rows are q (all heads) | k | v; head h owns rows [h*ch, (h+1)*ch) of each."""
    q, k, v = qkv.chunk(3)
    ch = q.shape[0] // heads
    sl = [slice(h * ch, (h + 1) * ch) for h in range(heads)]
    return torch.cat([_softmax_attention(q[s].t(), k[s].t(), v[s].t()).t() for s in sl])


@pytest.mark.parametrize("module, reference, wrong", [(QKVAttentionLegacy, _legacy_reference, _new_order_reference),
                                                      (QKVAttention, _new_order_reference, _legacy_reference)])
def test_qkv_layouts_match_their_hand_computed_reference_and_not_the_other(module, reference, wrong):
    torch.manual_seed(0)
    heads = 2
    qkv = torch.randn(2, 3 * heads * 3, 5)
    out = module(heads)(qkv)
    for b in range(2):
        torch.testing.assert_close(out[b], reference(qkv[b], heads), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out[b], wrong(qkv[b], heads), atol=1e-3)


def _adm_einsum_legacy(qkv, heads):
    """ADM's QKVAttentionLegacy.forward (the form its checkpoints were trained with), batched."""
    bs, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(bs * heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)


@pytest.mark.parametrize("module", [QKVAttentionLegacy, QKVAttention])
def test_long_attention_hands_the_fused_kernel_contiguous_4d_inputs(module, monkeypatch):
    # Transposed 3-D views send F.scaled_dot_product_attention to its generic kernel (1.4 to 1.8x slower
    # on CPU, issue 13); (B, H, T, ch) with a unit last stride reaches the fused one.
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dim(), q.stride(-1), k.stride(-1), v.stride(-1)))
        if hasattr(torch, "_fused_sdp_choice"):
            seen.append(int(torch._fused_sdp_choice(q, k, v)))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    module(4)(torch.randn(3, 3 * 4 * 16, 256))
    assert seen[0] == (4, 1, 1, 1)
    assert seen[1:] in ([], [1])  # 1: SDPBackend.FLASH_ATTENTION (0 would be the generic math kernel)
    seen.clear()
    module(4)(torch.randn(3, 3 * 4 * 16, 49))  # short on a CPU: the einsum form, faster there
    assert seen == []


def test_attention_matches_adms_einsum_form():
    # Short sequences take ADM's einsum form itself: the same numbers bit for bit. Long ones the fused
    # kernel, within 1e-6: measured 4.8e-7 on these inputs (unit scale, as after GroupNorm and the qkv
    # projection).
    g = torch.Generator().manual_seed(0)
    for heads, ch, length in [(4, 16, 49), (2, 32, 50), (1, 64, 64)]:
        qkv = torch.randn(2, 3 * heads * ch, length, generator=g)
        assert torch.equal(QKVAttentionLegacy(heads)(qkv), _adm_einsum_legacy(qkv, heads))
    for heads, ch, length in [(4, 64, 256), (2, 16, 1024)]:
        qkv = torch.randn(2, 3 * heads * ch, length, generator=g)
        assert (QKVAttentionLegacy(heads)(qkv) - _adm_einsum_legacy(qkv, heads)).abs().max() < 1e-6


def _block_reference(block, x, reference):
    b, c, hgt, wid = x.shape
    flat = x.reshape(b, c, -1)
    normed = F.group_norm(flat, 32, block.norm.weight, block.norm.bias, block.norm.eps)
    out = []
    for i in range(b):
        qkv = block.qkv.weight[:, :, 0] @ normed[i] + block.qkv.bias[:, None]
        h = block.proj_out.weight[:, :, 0] @ reference(qkv, block.num_heads) + block.proj_out.bias[:, None]
        out.append(flat[i] + h)
    return torch.stack(out).reshape(b, c, hgt, wid)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_block_uses_the_legacy_layout_unless_new_order(new_order):
    torch.manual_seed(0)
    block = perturb(AttentionBlock(64, num_heads=4, use_new_attention_order=new_order))
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.normal_()
    x = torch.randn(2, 64, 3, 3)
    right, wrong = (_new_order_reference, _legacy_reference) if new_order else (_legacy_reference, _new_order_reference)
    with torch.no_grad():
        out = block(x)
        torch.testing.assert_close(out, _block_reference(block, x, right), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(out, _block_reference(block, x, wrong), atol=1e-3)


def test_attention_pool_uses_the_new_layout_on_mean_token_plus_positions():
    torch.manual_seed(0)
    pool = AttentionPool2d(2, 8, 2, 3)  # 4 heads of 2 channels, 3 outputs
    x = torch.randn(2, 8, 2, 2)
    with torch.no_grad():
        out = pool(x)
        assert out.shape == (2, 3)
        for i in range(2):
            tokens = torch.cat([x[i].flatten(1).mean(-1, keepdim=True), x[i].flatten(1)], -1)
            tokens = tokens + pool.positional_embedding
            qkv = pool.qkv_proj.weight[:, :, 0] @ tokens + pool.qkv_proj.bias[:, None]

            right, wrong = ((pool.c_proj.weight[:, :, 0] @ ref(qkv, 4) + pool.c_proj.bias[:, None])[:, 0]
                            for ref in (_new_order_reference, _legacy_reference))
            torch.testing.assert_close(out[i], right, atol=1e-5, rtol=1e-5)
            assert not torch.allclose(out[i], wrong, atol=1e-3)


def test_attention_pool_rejects_another_image_size():
    clf = classifier_from_config(DIGITS_CLASSIFIER)
    with pytest.raises(ValueError, match="built for 7x7 features, got 8x8"):
        clf(torch.randn(1, 1, 32, 32), torch.tensor([0]))


# -- residual blocks ----------------------------------------------------------------------
def _resblock_reference(rb, x, emb, scale_shift, down):
    n1, conv1 = rb.in_layers[0], rb.in_layers[2]
    n2, conv2 = rb.out_layers[0], rb.out_layers[3]
    h = F.silu(F.group_norm(x, 32, n1.weight, n1.bias, n1.eps))
    if down:  # resampled between the activation and the convolution, on both paths
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    h = F.conv2d(h, conv1.weight, conv1.bias, padding=1)
    e = F.linear(F.silu(emb), rb.emb_layers[1].weight, rb.emb_layers[1].bias)[:, :, None, None]
    if scale_shift:
        scale, shift = e.chunk(2, dim=1)
        h = F.group_norm(h, 32, n2.weight, n2.bias, n2.eps) * (1 + scale) + shift
    else:
        h = F.group_norm(h + e, 32, n2.weight, n2.bias, n2.eps)
    h = F.conv2d(F.silu(h), conv2.weight, conv2.bias, padding=1)
    skip = rb.skip_connection
    return (x if isinstance(skip, torch.nn.Identity) else F.conv2d(x, skip.weight, skip.bias)) + h


@pytest.mark.parametrize("scale_shift, down, out_ch", [(True, False, 64), (False, False, 64), (True, True, 32)])
def test_resblock_matches_a_hand_computed_reference(scale_shift, down, out_ch):
    torch.manual_seed(0)
    rb = perturb(ResBlock(32, 16, 0.0, out_channels=out_ch, use_scale_shift_norm=scale_shift, down=down)).eval()
    with torch.no_grad():
        for norm in (rb.in_layers[0], rb.out_layers[0]):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
        rb.out_layers[3].weight.mul_(10)
        x, emb = torch.randn(2, 32, 4, 4), torch.randn(2, 16)
        out = rb(x, emb)
        assert out.shape == (2, out_ch, 2 if down else 4, 2 if down else 4)
        torch.testing.assert_close(out, _resblock_reference(rb, x, emb, scale_shift, down), atol=1e-5, rtol=1e-5)


# -- forward shapes, conditioning, gradients -----------------------------------------------
def test_digit_sized_models_run_forward_and_backward():
    unet = perturb(unet_from_config(DIGITS_UNET))
    clf = classifier_from_config(DIGITS_CLASSIFIER)
    x = torch.randn(3, 1, 28, 28, requires_grad=True)
    t = torch.tensor([0, 500, 999])
    out = unet(x, t, y=torch.tensor([1, 2, 3]))
    assert out.shape == (3, 2, 28, 28) and out.dtype == torch.float32  # learned sigma: eps and v per channel
    logits = clf(x, t)
    assert logits.shape == (3, 10)
    (out.square().mean() + torch.log_softmax(logits, -1)[:, 0].sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in clf.parameters())


def test_output_channels_follow_learn_sigma_and_in_channels():
    with torch.device("meta"):
        fixed = unet_from_config(dict(DIGITS_UNET, learn_sigma=False, in_channels=3))
        learned = unet_from_config(dict(DIGITS_UNET, in_channels=3))
    assert fixed.out[2].weight.shape[0] == 3 and learned.out[2].weight.shape[0] == 6


def test_labels_and_timesteps_change_the_output():
    torch.manual_seed(0)
    unet = perturb(unet_from_config(DIGITS_UNET)).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        base = unet(x, torch.tensor([10, 10]), torch.tensor([3, 3]))
        other_y = unet(x, torch.tensor([10, 10]), torch.tensor([3, 4]))
        other_t = unet(x, torch.tensor([10, 900]), torch.tensor([3, 3]))
        scalar_t = unet(x, 10, torch.tensor([3, 3]))
    torch.testing.assert_close(base[0], other_y[0])
    torch.testing.assert_close(base[0], other_t[0])
    assert not torch.allclose(base[1], other_y[1]) and not torch.allclose(base[1], other_t[1])
    torch.testing.assert_close(base, scalar_t)


def test_conditioning_errors_are_clear():
    unet = unet_from_config(DIGITS_UNET)
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match="class-conditional: pass labels y"):
        unet(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="one entry per sample"):
        unet(x, torch.tensor([1, 2, 3]), torch.tensor([0, 1]))
    uncond = unet_from_config(dict(DIGITS_UNET, class_cond=False))
    assert not hasattr(uncond, "label_emb")
    with pytest.raises(ValueError, match="unconditional"):
        uncond(x, torch.tensor([1, 2]), torch.tensor([0, 1]))


@pytest.mark.parametrize("pool, head_keys", [("adaptive", {"out.0.weight", "out.3.weight", "out.3.bias"}),
                                             ("spatial", {"out.0.weight", "out.2.weight"}),
                                             ("spatial_v2", {"out.0.weight", "out.1.weight", "out.3.weight"})])
def test_other_classifier_pools(pool, head_keys):
    clf = perturb(classifier_from_config(dict(DIGITS_CLASSIFIER, classifier_pool=pool)))
    assert head_keys <= set(clf.state_dict())
    logits = clf(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    assert logits.shape == (2, 10) and logits.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = perturb(unet_from_config(SMALL_UNET))
    ckpt = unet_from_config(dict(SMALL_UNET, use_checkpoint=True))
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, 8)
    grads, saved = [], []
    for m in (plain, ckpt):
        xi = x.clone().requires_grad_(True)
        packed = []

        def pack(t, packed=packed):
            packed.append(1)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = m(xi, torch.tensor([5, 600]), torch.tensor([1, 2]))
        out.square().sum().backward()
        grads.append(xi.grad)
        saved.append(len(packed))
    torch.testing.assert_close(grads[0], grads[1])
    assert saved[1] < saved[0] / 2  # the blocks' activations were recomputed, not kept


def test_the_guidance_gradient_never_recomputes_a_block(monkeypatch):
    # Checkpointing is for training memory. A classifier loaded for sampling is in eval mode: its guidance
    # gradient runs every block once (ADM's classifier_sample runs each attention block twice).
    from model_core.models import adm
    from model_core.sampling.guidance import log_prob_grad

    calls = []
    for cls in (adm.AttentionBlock, adm.ResBlock):
        real = cls._forward
        monkeypatch.setattr(cls, "_forward", lambda self, *a, _real=real: (calls.append(self), _real(self, *a))[1])
    clf = perturb(classifier_from_config(dict(DIGITS_CLASSIFIER, use_checkpoint=True)))
    blocks = [m for m in clf.modules() if isinstance(m, (adm.AttentionBlock, adm.ResBlock))]
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([5, 600]), torch.tensor([1, 2])
    log_prob_grad(clf.eval().requires_grad_(False), x, t, y)
    assert len(calls) == len(blocks) > 0
    calls.clear()
    log_prob_grad(clf.train(), x, t, y)
    assert len(calls) == 2 * len(blocks)  # in training mode the flag still saves memory


# -- fp16 -------------------------------------------------------------------------------
def _cpu_half_conv_supported():
    try:
        F.conv2d(torch.ones(1, 1, 3, 3, dtype=torch.float16), torch.ones(1, 1, 3, 3, dtype=torch.float16))
        return True
    except RuntimeError:
        return False


def _block_conv_params(model, parts):
    names = set()
    for part in parts:
        for mname, m in getattr(model, part).named_modules():
            if isinstance(m, CONV_TYPES):
                names |= {f"{part}.{mname}.{p}" for p, _ in m.named_parameters()}
    return names


@pytest.mark.parametrize("which", ["unet", "classifier"])
def test_fp16_conversion_touches_exactly_the_blocks_convolutions(which):
    if which == "unet":
        model, parts = unet_from_config(dict(DIGITS_UNET, use_fp16=True)), ("input_blocks", "middle_block",
                                                                             "output_blocks")
    else:
        model, parts = classifier_from_config(dict(DIGITS_CLASSIFIER, classifier_use_fp16=True)), (
            "input_blocks", "middle_block")
    assert model.use_fp16 and model.dtype == torch.float32  # not converted yet: runs in float32 (e.g. on a CPU)
    model.convert_to_fp16()
    assert model.dtype == torch.float16
    half = {n for n, p in model.named_parameters() if p.dtype == torch.float16}
    assert half == _block_conv_params(model, parts)
    assert "input_blocks.0.0.weight" in half and "middle_block.1.qkv.weight" in half
    assert not any(n.startswith(("time_embed", "label_emb", "out.")) for n in half)
    assert not any(".emb_layers." in n or ".norm." in n or "in_layers.0" in n for n in half)
    model.convert_to_fp32()
    assert all(p.dtype == torch.float32 for p in model.parameters()) and model.dtype == torch.float32


def test_fp16_models_take_and_return_float32():
    if not _cpu_half_conv_supported():
        pytest.skip("this torch build has no half-precision convolution on the CPU; dtype conversion is tested above")
    torch.manual_seed(0)
    unet = perturb(unet_from_config(dict(SMALL_UNET, use_fp16=True))).eval()
    clf = perturb(classifier_from_config(dict(SMALL_CLASSIFIER, classifier_use_fp16=True))).eval()
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.tensor([0, 3])
    with torch.no_grad():
        ref_u, ref_c = unet(x, t, y), clf(x, t)
        unet.convert_to_fp16(), clf.convert_to_fp16()
        out_u, out_c = unet(x, t, y), clf(x, t)
    assert out_u.dtype == torch.float32 and out_c.dtype == torch.float32
    torch.testing.assert_close(out_u, ref_u, atol=2e-2 * ref_u.abs().max().item(), rtol=0)
    torch.testing.assert_close(out_c, ref_c, atol=2e-2 * ref_c.abs().max().item(), rtol=0)
    assert not torch.equal(out_u, ref_u)  # the half-precision path really ran
    assert unet(x.half(), t, y).dtype == torch.float16  # callers get their own dtype back
    xg = x.clone().requires_grad_(True)
    clf(xg, t)[:, 0].sum().backward()  # guidance gradients through an fp16 classifier
    assert xg.grad.dtype == torch.float32 and torch.isfinite(xg.grad).all()


def test_group_norm_computes_in_float32():
    gn = GroupNorm32(32, 64)
    x = (torch.randn(1, 64, 4) * 300).half()  # half variance of these values overflows
    out = gn(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), F.group_norm(x.float(), 32), atol=1e-2, rtol=1e-2)


# -- factories and configs ----------------------------------------------------------------
def test_default_channel_mult_by_image_size_and_explicit_ones():
    with torch.device("meta"):
        assert create_unet(128, 32, 1).channel_mult == (1, 1, 2, 3, 4)
        assert create_unet(64, 32, 1).channel_mult == (1, 2, 3, 4)
        assert create_unet(32, 32, 1, attention_resolutions="16").channel_mult == (1, 2, 2, 2)
        assert create_unet(256, 32, 1).channel_mult == (1, 1, 2, 2, 4, 4)
        assert create_unet(512, 64, 1).channel_mult == (0.5, 1, 1, 2, 2, 4, 4)
        clf = create_classifier(32, 32, 2, classifier_attention_resolutions="16,8", channel_mult="1,2,2,4",
                                num_classes=10)  # the CIFAR-10 classifier of the paper's appendix
    assert clf.channel_mult == (1, 2, 2, 4)
    assert clf.out[2].c_proj.weight.shape == (10, 128, 1) and clf.out[2].positional_embedding.shape == (128, 17)
    assert clf.attention_resolutions == (2, 4)  # resolutions 16 and 8 are downsample rates 2 and 4


def test_model_classes_are_usable_directly():
    with torch.device("meta"):
        unet = UNetModel(32, 3, 32, 3, 1, (2,), channel_mult=(1, 2))
        clf = EncoderUNetModel(32, 3, 32, 5, 1, (2,), channel_mult=(1, 2), pool="adaptive")
    sd = unet.state_dict()  # rate 2 = the second level: attention after its res block; conv downsampling
    assert "input_blocks.3.1.qkv.weight" in sd and "input_blocks.2.0.op.weight" in sd and "input_blocks.1.1.qkv.weight" not in sd
    assert clf.out[3].weight.shape == (5, 64, 1, 1)


@pytest.mark.parametrize("cfg, message", [
    (dict(image_size=28, num_channels=32, num_res_blocks=1), "no default channel_mult for image_size 28"),
    (dict(DIGITS_UNET, attention_resolutions="16,8"), "attention resolution 16 is not a feature-map size"),
    (dict(DIGITS_UNET, channel_mult="1,2,2,2"), "image_size 28 cannot be halved 3 times"),
    (dict(DIGITS_UNET, learn_sigma="true"), "field 'learn_sigma' must be bool"),
    (dict(DIGITS_UNET, num_channels=32.0), "field 'num_channels' must be int"),
    (dict(DIGITS_UNET, use_fp61=True), r"unknown UNet config field\(s\) \['use_fp61'\]"),
    (dict(DIGITS_UNET, num_channels=24), "24 channels cannot be normalised in 32 groups"),
    (dict(DIGITS_UNET, num_heads=3), "num_heads=3 must divide the attention width 64"),
    (dict(DIGITS_UNET, channel_mult="1,x"), "channel_mult must be numbers"),
    ({"image_size": 28}, r"lacks required field\(s\) \['num_channels', 'num_res_blocks'\]"),
])
def test_bad_unet_configs_name_the_problem(cfg, message):
    with pytest.raises(ValueError, match=message):
        unet_from_config(cfg)


@pytest.mark.parametrize("cfg, message", [
    (dict(DIGITS_CLASSIFIER, classifier_pool="max"), "pool must be one of"),
    (dict(DIGITS_CLASSIFIER, num_head_channels=-1), "attention pooling needs num_head_channels"),
    (dict(DIGITS_CLASSIFIER, num_head_channels=48), "num_head_channels=48 must divide"),
    (dict(DIGITS_CLASSIFIER, dropout=0.1), r"unknown classifier config field\(s\) \['dropout'\]"),
])
def test_bad_classifier_configs_name_the_problem(cfg, message):
    with pytest.raises(ValueError, match=message):
        classifier_from_config(cfg)


def test_configs_accept_lists_as_well_as_comma_strings():
    with torch.device("meta"):
        a = unet_from_config(DIGITS_UNET)
        b = unet_from_config(dict(DIGITS_UNET, channel_mult=[1, 2, 2], attention_resolutions=[7]))
        c = unet_from_config(dict(DIGITS_UNET, attention_resolutions=7))
    assert layout(a) == layout(b) == layout(c)
