"""Loading weights by path, with errors that say exactly what does not fit.

The official ADM files (``128x128_diffusion.pt``, ``128x128_classifier.pt``)
and the robust classifier of Kawar et al. are plain state dicts whose keys and
shapes match :mod:`model_core.unet` one to one: no renaming happens here. Our
own training checkpoints may wrap the state dict; :func:`extract_state_dict`
prefers ``"ema"``, then ``"model"``, then ``"state_dict"``, because the EMA
weights are the ones to sample with.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

WRAPPER_KEYS = ("ema", "model", "state_dict")
SHOW = 20


class CheckpointNotFoundError(FileNotFoundError):
    pass


class CheckpointMismatchError(ValueError):
    pass


def extract_state_dict(obj) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                return extract_state_dict(obj[key])
    raise CheckpointMismatchError(
        f"not a state dict: expected a mapping of parameter names to tensors, or one under {WRAPPER_KEYS}")


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:SHOW]) + (f", ... ({len(items) - SHOW} more)" if len(items) > SHOW else "")
    return f"{len(items)} {title}: {shown}"


def check_compatible(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: model {tuple(expected[k].shape)} vs file {tuple(state[k].shape)}"
              for k in sorted(set(expected) & set(state)) if expected[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{what} weights in {source} do not fit the preset's architecture"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if shapes:
            parts.append(_listing("shape differences", shapes))
        raise CheckpointMismatchError("; ".join(parts))


def load_weights(model: torch.nn.Module, path: str | os.PathLike, *, what: str = "model",
                 env_var: str | None = None) -> torch.nn.Module:
    """Load a state dict from ``path`` into ``model`` strictly, casting each tensor to the model's dtype."""
    path = Path(path)
    if not path.is_file():
        hint = f" (set {env_var} to the file's path)" if env_var else ""
        raise CheckpointNotFoundError(f"{what} weights not found at {path}{hint}")
    state = extract_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    check_compatible(model, state, what, str(path))
    own = model.state_dict()
    # fp16 files into fp32 models (and back): the model's dtype wins.
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """A plain state dict (loadable by the ADM code too), written atomically; metadata beside it as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    if metadata is not None:
        meta = path.with_suffix(path.suffix + ".json")
        meta.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return path
