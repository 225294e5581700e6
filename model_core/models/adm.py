"""ADM networks (Dhariwal & Nichol 2021) whose state dicts match the public checkpoints.

``UNetModel`` is the (class-conditional, learned-sigma) denoiser and
``EncoderUNetModel`` the time-dependent classifier built from its encoder
half. Module names, nesting and registration order follow the public
guided-diffusion code, so ``128x128_diffusion.pt``, ``128x128_classifier.pt``
and the robust classifier of Kawar et al. load by key and shape without any
renaming. Two things matter beyond shapes and are easy to get wrong:

* the attention blocks use the *legacy* QKV layout (heads first: each head's
  rows are ``q|k|v`` next to each other) unless ``use_new_attention_order``;
  the classifier's attention pooling always uses the *new* layout (``q``, ``k``
  and ``v`` first, heads within each);
* the timestep embedding is ``[cos | sin]`` (see :mod:`model_core.models.nn`).

``create_unet`` / ``create_classifier`` take the flags of ADM's
``script_util`` (so presets are plain JSON dicts); ``attention_resolutions``
are feature-map sizes, turned into downsample rates ``image_size // res``.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _checkpoint

from model_core.models.nn import (
    avg_pool_nd,
    conv_nd,
    convert_module_to_f16,
    convert_module_to_f32,
    linear,
    normalization,
    timestep_embedding,
    upsample_nearest,
    zero_module,
)

__all__ = [
    "UNetModel", "EncoderUNetModel", "ResBlock", "AttentionBlock", "AttentionPool2d", "QKVAttention",
    "QKVAttentionLegacy", "Upsample", "Downsample", "TimestepBlock", "TimestepEmbedSequential", "timestep_embedding",
    "create_unet", "create_classifier", "unet_from_config", "classifier_from_config", "DEFAULT_CHANNEL_MULT",
    "POOLS",
]

# ADM's defaults per image size (script_util); 32 is improved-diffusion's CIFAR-10 UNet.
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}
POOLS = ("adaptive", "attention", "spatial", "spatial_v2")


def _run(fn, enabled: bool, *args):
    # Recompute activations in backward instead of storing them: training memory. Only in training
    # mode with a graph being built: the guidance gradient and the attacks (eval mode) back-propagate one
    # batch through frozen weights, where recomputing every block costs a second forward for nothing
    # (ADM's classifier_sample does recompute its attention blocks, whose checkpointing is always on).
    if enabled and torch.is_grad_enabled():
        return _checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


# -- blocks -----------------------------------------------------------------------
class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """A Sequential that hands the embedding to the children that take one."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2, then optionally a 3x3 convolution (``conv``)."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__()
        self.channels, self.out_channels = channels, out_channels or channels
        self.use_conv, self.dims = use_conv, dims
        if use_conv:
            self.conv = conv_nd(dims, channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample_nearest(x, self.dims)
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Stride-2 3x3 convolution, or 2x2 average pooling (``op`` either way)."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__()
        self.channels, self.out_channels = channels, out_channels or channels
        self.use_conv, self.dims = use_conv, dims
        stride = (1, 2, 2) if dims == 3 else 2
        if use_conv:
            self.op = conv_nd(dims, channels, self.out_channels, 3, stride=stride, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError(f"average-pool downsampling keeps the width ({channels}), "
                                 f"cannot produce {self.out_channels} channels")
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the embedding, optionally resampling (``up``/``down``).

    With ``use_scale_shift_norm`` the embedding gives a scale and a shift
    applied after the second norm (``norm(h) * (1 + scale) + shift``);
    otherwise it is added before it.
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_conv: bool = False, use_scale_shift_norm: bool = False, dims: int = 2,
                 use_checkpoint: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        self.channels, self.emb_channels = channels, emb_channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm, self.use_checkpoint = use_scale_shift_norm, use_checkpoint
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       conv_nd(dims, channels, self.out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False, dims), Upsample(channels, False, dims)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False, dims), Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)))
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return _run(self._forward, self.use_checkpoint and self.training, x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # The layers are called one by one: slicing an nn.Sequential builds a new module on every call.
        in_norm, in_act, in_conv = self.in_layers
        if self.updown:
            # Resample between the activation and the convolution, on both paths.
            h = in_conv(self.h_upd(in_act(in_norm(x))))
            x = self.x_upd(x)
        else:
            h = in_conv(in_act(in_norm(x)))
        e = self.emb_layers(emb).type(h.dtype)
        e = e.reshape(*e.shape, *([1] * (h.dim() - e.dim())))
        out_norm, out_act, out_drop, out_conv = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
        else:
            h = out_norm(h + e)
        h = out_conv(out_drop(out_act(h)))
        return self.skip_connection(x) + h


# Below this many positions the fused kernel's per-call cost outweighs its gain on a CPU: measured with
# 2 threads (issue 13), it took 1.4 to 1.9x the einsum form at 49 and 64 positions, 0.9 to 1.15x at 256
# (0.5x at 64 heads x batch), 0.2 to 0.8x at 1024. CUDA always takes the fused kernel.
FUSED_ATTENTION_MIN_POSITIONS_CPU = 128


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q^T k / sqrt(ch)) v for (B, H, ch, T) views of the qkv projection, returned as (B, H*ch, T).

    Long sequences (and any on CUDA) go to ``F.scaled_dot_product_attention``
    as contiguous (B, H, T, ch) tensors, which reach its fused kernel: the
    transposed 3-D views of ADM's layout sent it to the generic one, with an
    extra masking pass, 1.4 to 1.8x slower for the same numbers. Short ones on a
    CPU take ADM's own einsum form on the views (no copy), its exact arithmetic.
    """
    b, h, ch, length = q.shape
    if q.device.type == "cpu" and length < FUSED_ATTENTION_MIN_POSITIONS_CPU:
        q, k, v = (t.reshape(b * h, ch, length) for t in (q, k, v))
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        return torch.einsum("bts,bcs->bct", weight, v).reshape(b, h * ch, length)
    q, k, v = (t.transpose(-1, -2).contiguous() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, ch)
    return out.transpose(-1, -2).reshape(b, h * ch, length)


class QKVAttentionLegacy(nn.Module):
    """Heads first: the 3*H*ch rows are H groups of ``[q | k | v]`` (ADM's AttentionBlock default)."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs, self.n_heads, 3 * ch, length).split(ch, dim=2)
        return _attend(q, k, v)


class QKVAttention(nn.Module):
    """q, k, v first: the rows are ``[q (H*ch) | k (H*ch) | v (H*ch)]``, heads within each."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs, 3, self.n_heads, ch, length).unbind(dim=1)
        return _attend(q, k, v)


def _heads(channels: int, num_heads: int, num_head_channels: int) -> int:
    if num_head_channels == -1:
        if num_heads < 1 or channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the attention width {channels}")
        return num_heads
    if num_head_channels < 1 or channels % num_head_channels:
        raise ValueError(f"num_head_channels={num_head_channels} must divide the attention width {channels}")
    return channels // num_head_channels


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions, with a zero-initialised residual projection."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_checkpoint: bool = False, use_new_attention_order: bool = False):
        super().__init__()
        self.channels = channels
        self.num_heads = _heads(channels, num_heads, num_head_channels)
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, 3 * channels, 1)
        self.attention = (QKVAttention if use_new_attention_order else QKVAttentionLegacy)(self.num_heads)
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run(self._forward, self.use_checkpoint and self.training, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


class AttentionPool2d(nn.Module):
    """CLIP-style pooling: a mean token attends to all positions; its output is the logits.

    The parameter is named ``spacial_dim`` positionally as in ADM; it is the
    side of the final feature map, so the classifier only accepts inputs of
    its ``image_size``.
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads_channels: int, output_dim: int | None = None):
        super().__init__()
        self.spatial_dim = spacial_dim
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spacial_dim ** 2 + 1) / embed_dim ** 0.5)
        self.qkv_proj = conv_nd(1, embed_dim, 3 * embed_dim, 1)
        self.c_proj = conv_nd(1, embed_dim, output_dim or embed_dim, 1)
        self.num_heads = _heads(embed_dim, -1, num_heads_channels)
        self.attention = QKVAttention(self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        if x.shape[-1] + 1 != self.positional_embedding.shape[1]:
            raise ValueError(f"attention pooling was built for {self.spatial_dim}x{self.spatial_dim} features, got "
                             f"{'x'.join(map(str, spatial))}: the input image size differs from the model's image_size")
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        return self.c_proj(self.attention(self.qkv_proj(x)))[:, :, 0]


# -- the two networks ---------------------------------------------------------------
@dataclass
class _Encoder:
    time_embed: nn.Sequential
    input_blocks: nn.ModuleList
    middle_block: TimestepEmbedSequential
    skip_channels: list[int]
    channels: int
    ds: int


def _levels_check(channel_mult: Sequence[float], attention_resolutions: Sequence[int]) -> None:
    rates = [2 ** i for i in range(len(channel_mult))]
    bad = [r for r in attention_resolutions if r not in rates]
    if bad:
        raise ValueError(f"attention at downsample rate(s) {bad} never occurs: with {len(channel_mult)} levels "
                         f"the rates are {rates}")


def _build_encoder(in_channels: int, model_channels: int, num_res_blocks: int, attention_resolutions: Sequence[int],
                   dropout: float, channel_mult: Sequence[float], conv_resample: bool, dims: int,
                   use_checkpoint: bool, num_heads: int, num_head_channels: int, use_scale_shift_norm: bool,
                   resblock_updown: bool, use_new_attention_order: bool) -> _Encoder:
    """The half shared by both networks: embedding MLP, input blocks, middle block."""
    if not channel_mult:
        raise ValueError("channel_mult must name at least one level")
    _levels_check(channel_mult, attention_resolutions)
    emb_dim = 4 * model_channels

    def res(ch, out, **updown):
        return ResBlock(ch, emb_dim, dropout, out_channels=out, dims=dims, use_checkpoint=use_checkpoint,
                        use_scale_shift_norm=use_scale_shift_norm, **updown)

    def attn(ch):
        return AttentionBlock(ch, num_heads, num_head_channels, use_checkpoint, use_new_attention_order)

    time_embed = nn.Sequential(linear(model_channels, emb_dim), nn.SiLU(), linear(emb_dim, emb_dim))
    ch = int(channel_mult[0] * model_channels)
    blocks = [TimestepEmbedSequential(conv_nd(dims, in_channels, ch, 3, padding=1))]
    skips, ds = [ch], 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            out = int(mult * model_channels)
            layers = [res(ch, out)]
            ch = out
            if ds in attention_resolutions:
                layers.append(attn(ch))
            blocks.append(TimestepEmbedSequential(*layers))
            skips.append(ch)
        if level != len(channel_mult) - 1:
            blocks.append(TimestepEmbedSequential(
                res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, dims, ch)))
            skips.append(ch)
            ds *= 2
    middle = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch))
    return _Encoder(time_embed, nn.ModuleList(blocks), middle, skips, ch, ds)


def _batch_timesteps(timesteps, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(timesteps, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"timesteps must have one entry per sample ({x.shape[0]}), got shape {tuple(t.shape)}")
    return t


class _HalfTorso:
    """fp16 handling shared by both networks, as in ADM.

    ``convert_to_fp16`` turns the convolutions of the input, middle (and
    output) blocks to half precision; embeddings, norms, the timestep MLP and
    the output head stay float32. ``dtype`` reports the torso's actual
    precision, so a model built with ``use_fp16=True`` but not converted
    (e.g. on a CPU) simply runs in float32, and callers always pass and get
    back their own dtype.
    """

    _half_parts = ("input_blocks", "middle_block")

    @property
    def dtype(self) -> torch.dtype:
        return self.input_blocks[0][0].weight.dtype

    def convert_to_fp16(self):
        for part in self._half_parts:
            getattr(self, part).apply(convert_module_to_f16)
        return self

    def convert_to_fp32(self):
        for part in self._half_parts:
            getattr(self, part).apply(convert_module_to_f32)
        return self

    def _embed(self, timesteps, x: torch.Tensor) -> torch.Tensor:
        t = _batch_timesteps(timesteps, x)
        return self.time_embed(timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype))


class UNetModel(_HalfTorso, nn.Module):
    """The ADM denoiser. ``forward(x, timesteps, y=None)`` gives ``out_channels`` maps per sample.

    ``attention_resolutions`` here are downsample *rates* (1, 2, 4, ...), as in
    ADM's class; the factories convert from resolutions.
    """

    _half_parts = ("input_blocks", "middle_block", "output_blocks")

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions: Sequence[int], dropout: float = 0.0,
                 channel_mult: Sequence[float] = (1, 2, 4, 8), conv_resample: bool = True, dims: int = 2,
                 num_classes: int | None = None, use_checkpoint: bool = False, use_fp16: bool = False,
                 num_heads: int = 1, num_head_channels: int = -1, num_heads_upsample: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.model_channels, self.num_res_blocks = model_channels, num_res_blocks
        self.attention_resolutions, self.channel_mult = tuple(attention_resolutions), tuple(channel_mult)
        self.num_classes, self.use_fp16 = num_classes, use_fp16
        enc = _build_encoder(in_channels, model_channels, num_res_blocks, self.attention_resolutions, dropout,
                             self.channel_mult, conv_resample, dims, use_checkpoint, num_heads, num_head_channels,
                             use_scale_shift_norm, resblock_updown, use_new_attention_order)
        # Registration order = state-dict order of the official files.
        self.time_embed = enc.time_embed
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, 4 * model_channels)
        self.input_blocks, self.middle_block = enc.input_blocks, enc.middle_block

        emb_dim, ch, ds, skips = 4 * model_channels, enc.channels, enc.ds, list(enc.skip_channels)
        blocks = []
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(num_res_blocks + 1):
                out = int(model_channels * mult)
                layers: list[nn.Module] = [
                    ResBlock(ch + skips.pop(), emb_dim, dropout, out_channels=out, dims=dims,
                             use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm)]
                ch = out
                if ds in self.attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads_upsample, num_head_channels, use_checkpoint,
                                                 use_new_attention_order))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, emb_dim, dropout, out_channels=ch, dims=dims,
                                           use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm,
                                           up=True) if resblock_updown else Upsample(ch, conv_resample, dims, ch))
                    ds //= 2
                blocks.append(TimestepEmbedSequential(*layers))
        self.output_blocks = nn.ModuleList(blocks)
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(conv_nd(dims, int(self.channel_mult[0] * model_channels),
                                                     out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, timesteps, y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is None) != (self.num_classes is None):
            raise ValueError("this UNet is class-conditional: pass labels y" if y is None
                             else "this UNet is unconditional: it takes no labels y")
        emb = self._embed(timesteps, x)
        if y is not None:
            if y.shape != (x.shape[0],):
                raise ValueError(f"labels y must have one entry per sample ({x.shape[0]}), got {tuple(y.shape)}")
            emb = emb + self.label_emb(y)
        skips = []
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(self.out[-1].weight.dtype)).type(x.dtype)


class EncoderUNetModel(_HalfTorso, nn.Module):
    """The ADM time-dependent classifier: the UNet's encoder half and a pooling head.

    ``forward(x, timesteps)`` returns ``(N, out_channels)`` logits. Pools:
    ``attention`` (the official classifiers), ``adaptive`` (global average and
    a 1x1 conv), ``spatial``/``spatial_v2`` (an MLP on per-block means).
    """

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions: Sequence[int], dropout: float = 0.0,
                 channel_mult: Sequence[float] = (1, 2, 4, 8), conv_resample: bool = True, dims: int = 2,
                 use_checkpoint: bool = False, use_fp16: bool = False, num_heads: int = 1,
                 num_head_channels: int = -1, num_heads_upsample: int = -1, use_scale_shift_norm: bool = False,
                 resblock_updown: bool = False, use_new_attention_order: bool = False, pool: str = "adaptive"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        _check_image_size(image_size, channel_mult)
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.model_channels, self.num_res_blocks = model_channels, num_res_blocks
        self.attention_resolutions, self.channel_mult = tuple(attention_resolutions), tuple(channel_mult)
        self.use_fp16, self.pool = use_fp16, pool
        enc = _build_encoder(in_channels, model_channels, num_res_blocks, self.attention_resolutions, dropout,
                             self.channel_mult, conv_resample, dims, use_checkpoint, num_heads, num_head_channels,
                             use_scale_shift_norm, resblock_updown, use_new_attention_order)
        self.time_embed, self.input_blocks, self.middle_block = enc.time_embed, enc.input_blocks, enc.middle_block
        ch = enc.channels
        if pool == "adaptive":
            self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                                     zero_module(conv_nd(dims, ch, out_channels, 1)), nn.Flatten())
        elif pool == "attention":
            if num_head_channels == -1:
                raise ValueError("attention pooling needs num_head_channels (e.g. 64), not -1")
            self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                     AttentionPool2d(image_size // enc.ds, ch, num_head_channels, out_channels))
        else:
            features = sum(enc.skip_channels) + ch  # every input block's mean, then the middle block's
            hidden = [nn.ReLU()] if pool == "spatial" else [normalization(2048), nn.SiLU()]
            self.out = nn.Sequential(nn.Linear(features, 2048), *hidden, nn.Linear(2048, out_channels))

    def forward(self, x: torch.Tensor, timesteps) -> torch.Tensor:
        emb = self._embed(timesteps, x)
        head_dtype = self.out[0].weight.dtype
        spatial = self.pool.startswith("spatial")
        means = []
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            if spatial:
                means.append(h.type(head_dtype).mean(dim=(2, 3)))
        h = self.middle_block(h, emb)
        if spatial:
            means.append(h.type(head_dtype).mean(dim=(2, 3)))
            h = torch.cat(means, dim=-1)
        return self.out(h.type(head_dtype)).type(x.dtype)


# -- factories with ADM's script_util flags ------------------------------------------
def _check_image_size(image_size: int, channel_mult: Sequence[float]) -> None:
    factor = 2 ** (len(channel_mult) - 1)
    if image_size < factor or image_size % factor:
        raise ValueError(f"image_size {image_size} cannot be halved {len(channel_mult) - 1} times "
                         f"(channel_mult has {len(channel_mult)} levels): it must be a multiple of {factor}")


def parse_channel_mult(image_size: int, channel_mult) -> tuple[float, ...]:
    """``""`` means ADM's default for the image size; else ``"1,2,2"`` or a list of numbers."""
    if channel_mult in ("", None):
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size {image_size}: give one, e.g. '1,2,2' "
                             f"(defaults exist for {sorted(DEFAULT_CHANNEL_MULT)})")
        return DEFAULT_CHANNEL_MULT[image_size]
    items = channel_mult.split(",") if isinstance(channel_mult, str) else list(channel_mult)
    try:
        mult = tuple(float(m) if float(m) != int(float(m)) else int(float(m)) for m in items)
    except (TypeError, ValueError):
        raise ValueError(f"channel_mult must be numbers like '1,2,2', got {channel_mult!r}") from None
    if not mult or any(m <= 0 for m in mult):
        raise ValueError(f"channel_mult must be positive numbers, got {channel_mult!r}")
    return mult


def parse_attention_resolutions(image_size: int, resolutions, channel_mult: Sequence[float]) -> tuple[int, ...]:
    """Feature-map sizes (``"32,16,8"``) to downsample rates (``image_size // res``)."""
    if isinstance(resolutions, int) and not isinstance(resolutions, bool):
        items = [resolutions]
    elif isinstance(resolutions, str):
        items = [r for r in resolutions.split(",") if r.strip()]
    else:
        items = list(resolutions)
    sizes = [image_size // 2 ** i for i in range(len(channel_mult))]
    rates = []
    for r in items:
        try:
            res = int(r)
        except (TypeError, ValueError):
            raise ValueError(f"attention resolutions must be integers like '16,8', got {resolutions!r}") from None
        if res not in sizes:
            raise ValueError(f"attention resolution {res} is not a feature-map size of this model "
                             f"(image_size {image_size}, {len(channel_mult)} levels: sizes {sizes})")
        rates.append(image_size // res)
    return tuple(rates)


def create_unet(image_size: int, num_channels: int, num_res_blocks: int, channel_mult="", learn_sigma: bool = False,
                class_cond: bool = False, attention_resolutions="16,8", num_heads: int = 1,
                num_head_channels: int = -1, num_heads_upsample: int = -1, use_scale_shift_norm: bool = False,
                dropout: float = 0.0, resblock_updown: bool = False, use_fp16: bool = False,
                use_new_attention_order: bool = False, in_channels: int = 3, num_classes: int = 1000,
                use_checkpoint: bool = False) -> UNetModel:
    """ADM's ``create_model``: a learned-sigma model outputs ``2 * in_channels`` maps (eps, then v)."""
    mult = parse_channel_mult(image_size, channel_mult)
    _check_image_size(image_size, mult)
    return UNetModel(image_size, in_channels, num_channels, in_channels * (2 if learn_sigma else 1), num_res_blocks,
                     parse_attention_resolutions(image_size, attention_resolutions, mult), dropout, mult,
                     num_classes=num_classes if class_cond else None, use_checkpoint=use_checkpoint,
                     use_fp16=use_fp16, num_heads=num_heads, num_head_channels=num_head_channels,
                     num_heads_upsample=num_heads_upsample, use_scale_shift_norm=use_scale_shift_norm,
                     resblock_updown=resblock_updown, use_new_attention_order=use_new_attention_order)


def create_classifier(image_size: int, classifier_width: int, classifier_depth: int,
                      classifier_attention_resolutions="32,16,8", classifier_use_scale_shift_norm: bool = True,
                      classifier_resblock_updown: bool = True, classifier_pool: str = "attention",
                      classifier_use_fp16: bool = False, in_channels: int = 3, num_classes: int = 1000,
                      channel_mult="", num_head_channels: int = 64,
                      use_checkpoint: bool = False) -> EncoderUNetModel:
    """ADM's ``create_classifier`` (defaults as its ``classifier_defaults``), plus channels/classes/mult."""
    mult = parse_channel_mult(image_size, channel_mult)
    _check_image_size(image_size, mult)
    return EncoderUNetModel(image_size, in_channels, classifier_width, num_classes, classifier_depth,
                            parse_attention_resolutions(image_size, classifier_attention_resolutions, mult),
                            channel_mult=mult, use_checkpoint=use_checkpoint, use_fp16=classifier_use_fp16,
                            num_head_channels=num_head_channels,
                            use_scale_shift_norm=classifier_use_scale_shift_norm,
                            resblock_updown=classifier_resblock_updown, pool=classifier_pool)


def _check_config(cfg: Any, factory, what: str) -> dict:
    """Field-by-field validation, so a bad preset names its field instead of failing deep inside."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{what} config must be a dict of flags, got {type(cfg).__name__}")
    params = inspect.signature(factory).parameters
    unknown = sorted(set(cfg) - set(params))
    if unknown:
        raise ValueError(f"unknown {what} config field(s) {unknown}; accepted: {sorted(params)}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in cfg]
    if missing:
        raise ValueError(f"{what} config lacks required field(s) {missing}")
    for name, value in cfg.items():
        default = params[name].default
        kind = type(default) if default is not inspect.Parameter.empty else int
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:  # the comma strings: also a list of numbers, or one int
            ok = isinstance(value, (str, list, tuple, int)) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"{what} config field {name!r} must be {kind.__name__}-like, got {value!r}")
    return cfg


def unet_from_config(cfg: dict) -> UNetModel:
    """Build a UNet from a JSON-able dict of :func:`create_unet` keyword arguments."""
    return create_unet(**_check_config(cfg, create_unet, "UNet"))


def classifier_from_config(cfg: dict) -> EncoderUNetModel:
    """Build a classifier from a JSON-able dict of :func:`create_classifier` keyword arguments."""
    return create_classifier(**_check_config(cfg, create_classifier, "classifier"))
