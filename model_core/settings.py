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

DEFAULT_CHECKPOINT_DIR = "checkpoints"
DEFAULT_MAX_BATCH = 64


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
