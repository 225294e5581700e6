"""Every environment variable the core reads, in one place (torch-free).

The CLI, the workers and the API configure the core through these; nothing
else in ``model_core`` touches ``os.environ``. Each reader is a function, so
a value set after import (a test, ``rguide up`` starting a worker) is seen.
"""
from __future__ import annotations

import os
from pathlib import Path

PRESET = "RGUIDE_PRESET"                    # the default preset's name
CHECKPOINT_DIR = "RGUIDE_CHECKPOINT_DIR"    # where relative checkpoint paths of presets live
DEVICE = "RGUIDE_DEVICE"                    # cpu, cuda, cuda:1; default cuda when available
MAX_BATCH = "RGUIDE_MAX_BATCH"              # trajectories per sampling batch
INCEPTION_WEIGHTS = "RGUIDE_INCEPTION_WEIGHTS"  # Inception-V3 weights for FID on ImageNet-like presets
REFERENCE_DIR = "RGUIDE_REFERENCE_DIR"      # stored real-image reference statistics (model_core/evaluation/reference.py)
# How a pipeline runs its networks (model_core/runtime.py); all off by default, since each changes
# images by float rounding or more (docs/sampling.md, "Speed settings").
CHANNELS_LAST = "RGUIDE_CHANNELS_LAST"      # 1: channels-last memory format for both networks
AUTOCAST = "RGUIDE_AUTOCAST"                # off | bf16 (CPU or CUDA) | fp16 (CUDA only)
COMPILE = "RGUIDE_COMPILE"                  # off | default | reduce-overhead (CUDA graphs) | max-autotune

DEFAULT_CHECKPOINT_DIR = "checkpoints"
DEFAULT_MAX_BATCH = 64
AUTOCAST_CHOICES = ("off", "bf16", "fp16")
COMPILE_CHOICES = ("off", "default", "reduce-overhead", "max-autotune")


def env(name: str) -> str | None:
    """The variable's value, or None when unset or empty (a preset's own variables go through here too)."""
    return os.environ.get(name) or None


def env_path(name: str) -> Path | None:
    value = env(name)
    return Path(value).expanduser() if value else None


def preset_name() -> str | None:
    return env(PRESET)


def checkpoint_dir() -> Path:
    return Path(env(CHECKPOINT_DIR) or DEFAULT_CHECKPOINT_DIR).expanduser()


def device() -> str | None:
    return env(DEVICE)


def max_batch() -> int:
    raw = env(MAX_BATCH)
    if raw is None:
        return DEFAULT_MAX_BATCH
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_BATCH}={raw!r} is not a whole number of trajectories") from None
    if value < 1:
        raise ValueError(f"{MAX_BATCH}={raw!r}: a batch holds at least 1 trajectory")
    return value


def _choice(name: str, choices: tuple[str, ...]) -> str:
    raw = (env(name) or choices[0]).strip().lower()
    if raw not in choices:
        raise ValueError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw


def channels_last() -> bool:
    raw = (env(CHANNELS_LAST) or "0").strip().lower()
    if raw not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
        raise ValueError(f"{CHANNELS_LAST}={raw!r}: use 1 or 0")
    return raw in ("1", "true", "yes", "on")


def autocast() -> str | None:
    """The autocast dtype name for the networks' forward and backward, or None (float32)."""
    value = _choice(AUTOCAST, AUTOCAST_CHOICES)
    return None if value == "off" else value


def compile_mode() -> str | None:
    """The ``torch.compile`` mode for both networks, or None (eager)."""
    value = _choice(COMPILE, COMPILE_CHOICES)
    return None if value == "off" else value
