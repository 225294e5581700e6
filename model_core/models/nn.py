"""Primitive layers and helpers shared by the ADM-style networks in :mod:`model_core.models.adm`.

These follow the conventions of the public guided-diffusion code wherever a
convention changes numbers or state-dict layout: the sinusoidal embedding is
``[cos | sin]``, normalisation is 32-group GroupNorm evaluated in float32,
and half precision touches convolutions only.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NORM_GROUPS = 32

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_AVG_POOLS = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
CONV_TYPES = tuple(_CONVS.values())


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, shape ``(N, dim)``.

    Frequency ``i`` is ``exp(-log(max_period) * i / half)``; the cosines come
    first, then the sines. Pretrained ADM weights depend on this exact order:
    swapping it leaves shapes intact but silently ruins the model. An odd
    ``dim`` gets one zero column at the end.
    """
    timesteps = torch.as_tensor(timesteps)
    if timesteps.dim() == 0:
        timesteps = timesteps[None]
    if timesteps.dim() != 1:
        raise ValueError(f"timesteps must be a 1-D tensor (one per sample), got shape {tuple(timesteps.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are always computed in float32.

    Under fp16 the blocks' activations are half precision; their variance over
    a large group under- or overflows in half, so normalise in float32 and
    hand back the caller's dtype.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    if channels % NORM_GROUPS:
        raise ValueError(f"{channels} channels cannot be normalised in {NORM_GROUPS} groups: "
                         f"every channel width (num_channels x channel_mult) must be a multiple of {NORM_GROUPS}")
    return GroupNorm32(NORM_GROUPS, channels)


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    if dims not in _CONVS:
        raise ValueError(f"dims must be 1, 2 or 3, got {dims}")
    return _CONVS[dims](*args, **kwargs)


def avg_pool_nd(dims: int, *args, **kwargs) -> nn.Module:
    if dims not in _AVG_POOLS:
        raise ValueError(f"dims must be 1, 2 or 3, got {dims}")
    return _AVG_POOLS[dims](*args, **kwargs)


def linear(*args, **kwargs) -> nn.Linear:
    return nn.Linear(*args, **kwargs)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters in place: residual branches start as the identity."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def convert_module_to_f16(module: nn.Module) -> None:
    """Half-precision weights for convolutions only (``Module.apply`` visitor).

    Linear layers (the timestep projections) stay float32 because they read
    the float32 embedding; norms stay float32 by design (see GroupNorm32).
    """
    if isinstance(module, CONV_TYPES):
        module.weight.data = module.weight.data.half()
        if module.bias is not None:
            module.bias.data = module.bias.data.half()


def convert_module_to_f32(module: nn.Module) -> None:
    """Undo :func:`convert_module_to_f16`."""
    if isinstance(module, CONV_TYPES):
        module.weight.data = module.weight.data.float()
        if module.bias is not None:
            module.bias.data = module.bias.data.float()


def upsample_nearest(x: torch.Tensor, dims: int) -> torch.Tensor:
    """Double the spatial size; for 3-D signals only the inner two axes (frames stay)."""
    if dims == 3:
        return F.interpolate(x, (x.shape[2], x.shape[3] * 2, x.shape[4] * 2), mode="nearest")
    return F.interpolate(x, scale_factor=2, mode="nearest")
