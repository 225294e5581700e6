"""How a pipeline runs its networks: memory format, autocast and ``torch.compile``, from the settings.

Every option is off by default: each changes images (channels-last and
``torch.compile`` by float rounding, autocast by far more), and the pinned
demo hashes and the batch-invariance tests hold for the defaults. What was
measured, and what is unmeasured here (everything on CUDA), is in
``docs/sampling.md`` under "Speed settings".

* ``RGUIDE_CHANNELS_LAST=1``: both networks' weights in channels-last format.
* ``RGUIDE_AUTOCAST=bf16|fp16``: the networks' forward (and the classifier's
  backward) under ``torch.autocast``; the samplers' arithmetic and the
  log-softmax stay float32 (the networks hand back float32). fp16 is CUDA only.
* ``RGUIDE_COMPILE=default|reduce-overhead|max-autotune``: ``torch.compile``
  with that mode; on CUDA ``reduce-overhead`` replays CUDA graphs.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from model_core import settings

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def prepare(module: torch.nn.Module) -> torch.nn.Module:
    """The module as the settings want it run (the same object when every option is off)."""
    if settings.channels_last():
        module = module.to(memory_format=torch.channels_last)
    mode = settings.compile_mode()
    if mode is not None:
        module = torch.compile(module, mode=None if mode == "default" else mode)
    return module


def autocast(device: str | torch.device) -> AbstractContextManager:
    """The autocast context for sampling on ``device`` (a no-op unless ``RGUIDE_AUTOCAST`` is set)."""
    name = settings.autocast()
    if name is None:
        return nullcontext()
    kind = torch.device(device).type
    if name == "fp16" and kind != "cuda":
        raise ValueError(f"{settings.AUTOCAST}=fp16 needs a CUDA device (this one is {kind}); use bf16 on a CPU")
    return torch.autocast(kind, dtype=DTYPES[name])


DEFAULTS = {"channels_last": False, "autocast": "off", "compile": "off"}


def describe() -> dict[str, object]:
    """The settings in force, for provenance."""
    return {"channels_last": settings.channels_last(), "autocast": settings.autocast() or "off",
            "compile": settings.compile_mode() or "off"}
