"""ADM architectures, key- and shape-compatible with the public guided-diffusion checkpoints."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def norm(ch):
    return GroupNorm32(32, ch)


def conv(dims, *a, **k):
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims](*a, **k)


def zero(m):
    for p in m.parameters():
        p.detach().zero_()
    return m


class TimestepBlock(nn.Module):
    pass


class Seq(nn.Sequential, TimestepBlock):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, ch, use_conv, dims=2, out_ch=None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = conv(dims, ch, out_ch or ch, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, ch, use_conv, dims=2, out_ch=None):
        super().__init__()
        self.op = conv(dims, ch, out_ch or ch, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    def __init__(self, ch, emb_ch, dropout, out_ch=None, use_scale_shift_norm=False, dims=2, up=False, down=False):
        super().__init__()
        out_ch = out_ch or ch
        self.ss = use_scale_shift_norm
        self.in_layers = nn.Sequential(norm(ch), nn.SiLU(), conv(dims, ch, out_ch, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(ch, False, dims), Upsample(ch, False, dims)
        elif down:
            self.h_upd, self.x_upd = Downsample(ch, False, dims), Downsample(ch, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if use_scale_shift_norm else out_ch))
        self.out_layers = nn.Sequential(norm(out_ch), nn.SiLU(), nn.Dropout(dropout),
                                        zero(conv(dims, out_ch, out_ch, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_ch == ch else conv(dims, ch, out_ch, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)
        while e.dim() < h.dim():
            e = e[..., None]
        if self.ss:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class QKVAttentionLegacy(nn.Module):
    def __init__(self, n_heads):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv):
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        w = torch.softmax(w.float(), dim=-1).type(w.dtype)
        return torch.einsum("bts,bcs->bct", w, v).reshape(bs, -1, length)


class QKVAttention(nn.Module):
    def __init__(self, n_heads):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv):
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.chunk(3, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        w = torch.einsum("bct,bcs->bts", (q * scale).reshape(bs * self.n_heads, ch, length),
                         (k * scale).reshape(bs * self.n_heads, ch, length))
        w = torch.softmax(w.float(), dim=-1).type(w.dtype)
        return torch.einsum("bts,bcs->bct", w, v.reshape(bs * self.n_heads, ch, length)).reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    def __init__(self, ch, num_heads=1, num_head_channels=-1, use_new_attention_order=False):
        super().__init__()
        self.num_heads = num_heads if num_head_channels == -1 else ch // num_head_channels
        self.norm = norm(ch)
        self.qkv = conv(1, ch, 3 * ch, 1)
        self.attention = QKVAttention(self.num_heads) if use_new_attention_order else QKVAttentionLegacy(self.num_heads)
        self.proj_out = zero(conv(1, ch, ch, 1))

    def forward(self, x):
        b, c, *sp = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *sp)


class AttentionPool2d(nn.Module):
    def __init__(self, spacial_dim, embed_dim, num_heads_channels, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spacial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = conv(1, embed_dim, 3 * embed_dim, 1)
        self.c_proj = conv(1, embed_dim, output_dim or embed_dim, 1)
        self.attention = QKVAttention(embed_dim // num_heads_channels)

    def forward(self, x):
        b, c, *_ = x.shape
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        return self.c_proj(self.attention(self.qkv_proj(x)))[:, :, 0]


def _encoder(self, in_channels, mc, num_res_blocks, attention_resolutions, dropout, channel_mult, conv_resample,
             dims, num_heads, num_head_channels, use_scale_shift_norm, resblock_updown, use_new_attention_order):
    ted = mc * 4
    self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
    ch = int(channel_mult[0] * mc)
    self.input_blocks = nn.ModuleList([Seq(conv(dims, in_channels, ch, 3, padding=1))])
    chans, ds = [ch], 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers = [ResBlock(ch, ted, dropout, int(mult * mc), use_scale_shift_norm, dims)]
            ch = int(mult * mc)
            if ds in attention_resolutions:
                layers.append(AttentionBlock(ch, num_heads, num_head_channels, use_new_attention_order))
            self.input_blocks.append(Seq(*layers))
            chans.append(ch)
        if level != len(channel_mult) - 1:
            self.input_blocks.append(Seq(ResBlock(ch, ted, dropout, ch, use_scale_shift_norm, dims, down=True)
                                         if resblock_updown else Downsample(ch, conv_resample, dims, ch)))
            chans.append(ch)
            ds *= 2
    self.middle_block = Seq(ResBlock(ch, ted, dropout, ch, use_scale_shift_norm, dims),
                            AttentionBlock(ch, num_heads, num_head_channels, use_new_attention_order),
                            ResBlock(ch, ted, dropout, ch, use_scale_shift_norm, dims))
    return ch, chans, ds, ted


class UNetModel(nn.Module):
    def __init__(self, image_size, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 dropout=0.0, channel_mult=(1, 2, 4, 8), conv_resample=True, dims=2, num_classes=None,
                 use_checkpoint=False, use_fp16=False, num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
                 use_scale_shift_norm=False, resblock_updown=False, use_new_attention_order=False):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.model_channels, self.num_classes = model_channels, num_classes
        self.dtype = torch.float16 if use_fp16 else torch.float32
        ch, chans, ds, ted = _encoder(self, in_channels, model_channels, num_res_blocks, attention_resolutions,
                                      dropout, channel_mult, conv_resample, dims, num_heads, num_head_channels,
                                      use_scale_shift_norm, resblock_updown, use_new_attention_order)
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, ted)
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                ich = chans.pop()
                layers = [ResBlock(ch + ich, ted, dropout, int(model_channels * mult), use_scale_shift_norm, dims)]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads_upsample, num_head_channels, use_new_attention_order))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, ted, dropout, ch, use_scale_shift_norm, dims, up=True)
                                  if resblock_updown else Upsample(ch, conv_resample, dims, ch))
                    ds //= 2
                self.output_blocks.append(Seq(*layers))
        input_ch = int(channel_mult[0] * model_channels)
        self.out = nn.Sequential(norm(ch), nn.SiLU(), zero(conv(dims, input_ch, out_channels, 3, padding=1)))

    def forward(self, x, timesteps, y=None):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs, h = [], x.type(self.dtype)
        for m in self.input_blocks:
            h = m(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for m in self.output_blocks:
            h = m(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


class EncoderUNetModel(nn.Module):
    def __init__(self, image_size, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 dropout=0.0, channel_mult=(1, 2, 4, 8), conv_resample=True, dims=2, use_checkpoint=False,
                 use_fp16=False, num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
                 use_scale_shift_norm=False, resblock_updown=False, use_new_attention_order=False, pool="adaptive"):
        super().__init__()
        self.model_channels = model_channels
        self.dtype = torch.float16 if use_fp16 else torch.float32
        ch, _, ds, _ = _encoder(self, in_channels, model_channels, num_res_blocks, attention_resolutions, dropout,
                                channel_mult, conv_resample, dims, num_heads, num_head_channels,
                                use_scale_shift_norm, resblock_updown, use_new_attention_order)
        self.out = nn.Sequential(norm(ch), nn.SiLU(), AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels))

    def forward(self, x, timesteps):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x.type(self.dtype)
        for m in self.input_blocks:
            h = m(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h.type(x.dtype))


def _to_f16(m):
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        m.weight.data = m.weight.data.half()
        if m.bias is not None:
            m.bias.data = m.bias.data.half()


def _convert_to_fp16(self):
    """Like ADM: only the blocks' convolutions become half; embeddings, norms and the head stay float32."""
    self.input_blocks.apply(_to_f16)
    self.middle_block.apply(_to_f16)
    if hasattr(self, "output_blocks"):
        self.output_blocks.apply(_to_f16)
    self.dtype = torch.float16


UNetModel.convert_to_fp16 = _convert_to_fp16
EncoderUNetModel.convert_to_fp16 = _convert_to_fp16

_DEFAULT_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4),
                 32: (1, 2, 2, 2)}


def _mult(image_size, channel_mult):
    if channel_mult in ("", None):
        if image_size not in _DEFAULT_MULT:
            raise ValueError(f"no default channel_mult for image_size {image_size}: give one, e.g. '1,2,2'")
        return _DEFAULT_MULT[image_size]
    if isinstance(channel_mult, str):
        return tuple(float(c) if "." in c else int(c) for c in channel_mult.split(","))
    return tuple(channel_mult)


def _ds(image_size, resolutions):
    if isinstance(resolutions, str):
        resolutions = [int(r) for r in resolutions.split(",") if r.strip()]
    return tuple(image_size // int(r) for r in resolutions)


def create_unet(image_size, num_channels, num_res_blocks, channel_mult="", learn_sigma=False, class_cond=False,
                attention_resolutions="16,8", num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
                use_scale_shift_norm=False, dropout=0.0, resblock_updown=False, use_fp16=False,
                use_new_attention_order=False, in_channels=3, num_classes=1000, use_checkpoint=False):
    return UNetModel(image_size, in_channels, num_channels, in_channels * (2 if learn_sigma else 1), num_res_blocks,
                     _ds(image_size, attention_resolutions), dropout, _mult(image_size, channel_mult),
                     num_classes=num_classes if class_cond else None, use_fp16=use_fp16, num_heads=num_heads,
                     num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
                     use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown,
                     use_new_attention_order=use_new_attention_order)


def create_classifier(image_size, classifier_width, classifier_depth, classifier_attention_resolutions="32,16,8",
                      classifier_use_scale_shift_norm=True, classifier_resblock_updown=True,
                      classifier_pool="attention", classifier_use_fp16=False, in_channels=3, num_classes=1000,
                      channel_mult="", num_head_channels=64):
    return EncoderUNetModel(image_size, in_channels, classifier_width, num_classes, classifier_depth,
                            _ds(image_size, classifier_attention_resolutions), 0.0, _mult(image_size, channel_mult),
                            use_fp16=classifier_use_fp16, num_head_channels=num_head_channels,
                            use_scale_shift_norm=classifier_use_scale_shift_norm,
                            resblock_updown=classifier_resblock_updown, pool=classifier_pool)


def unet_from_config(cfg):
    return create_unet(**cfg)


def classifier_from_config(cfg):
    return create_classifier(**cfg)
