"""Loading and saving weights by path, with errors that say exactly what does not fit.

The official ADM files (``128x128_diffusion.pt``, ``128x128_classifier.pt``)
and the robust classifier of Kawar et al. are plain state dicts whose keys and
shapes match :mod:`model_core.models.adm` one to one, so nothing is renamed here:
a file either fits the architecture exactly or is refused with the list of
differences.

Accepted file layouts, tried in this order:

1. a plain state dict (every value a tensor), as the official files are;
2. a dict that holds one under ``"ema"``, else ``"model"``, else
   ``"state_dict"`` (our training checkpoints). EMA weights come first
   because they are the ones to sample with; a wrapper key holding ``None``
   is skipped.

Floating-point tensors are cast to the dtype of the parameter they load into,
so half-precision files load into float32 models and the reverse.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from model_core.errors import InputError
from model_core.files import atomic_write, atomic_write_text, sha256_file

__all__ = ["CheckpointNotFoundError", "CheckpointMismatchError", "CheckpointReadError", "WRAPPER_KEYS",
           "extract_state_dict", "check_compatible", "load_state_dict_file", "load_weights", "save_weights",
           "read_metadata"]

WRAPPER_KEYS = ("ema", "model", "state_dict")
SHOW = 20  # items listed per kind of difference; the rest are counted


class CheckpointNotFoundError(FileNotFoundError, InputError):
    """No file at the given path (message names the path and the variable that sets it)."""


class CheckpointMismatchError(ValueError, InputError):
    """The file's keys or shapes differ from the architecture's."""


class CheckpointReadError(ValueError, InputError):
    """The file exists but is not a loadable weights file."""


def extract_state_dict(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded object (see the module docstring for the order)."""
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in obj.items()):
        return obj
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                return extract_state_dict(obj[key], f"{source}[{key!r}]")
    found = f"a dict with keys {sorted(map(str, obj))[:10]}" if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointReadError(f"{source} is not a state dict: expected a mapping of parameter names to tensors, "
                              f"or one under {list(WRAPPER_KEYS)}; found {found}")


def _listing(title: str, items: list[str]) -> str:
    more = f", ... and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return f"{len(items)} {title}: " + ", ".join(items[:SHOW]) + more


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str | None:
    # A DataParallel/DDP-saved file differs only by a "module." prefix; say so rather than list 400 keys twice.
    if (unexpected and all(k.startswith("module.") for k in unexpected)
            and {k[len("module."):] for k in unexpected} >= set(missing)):
        return "the file's keys carry a 'module.' prefix (saved from DataParallel/DDP): strip it when saving"
    return None


def check_compatible(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, source: str) -> None:
    """Raise CheckpointMismatchError listing missing keys, unexpected keys and shape differences."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: model {tuple(expected[k].shape)} vs file {tuple(state[k].shape)}"
              for k in expected if k in state and expected[k].shape != state[k].shape]
    if not (missing or unexpected or shapes):
        return
    parts = [(f"{what} weights in {source} do not fit the architecture "
              f"({len(expected)} tensors expected, {len(state)} in the file)")]
    if missing:
        parts.append(_listing("missing keys", missing))
    if unexpected:
        parts.append(_listing("unexpected keys", unexpected))
    if shapes:
        parts.append(_listing("shape differences", shapes))
    hint = _prefix_hint(missing, unexpected)
    if hint:
        parts.append(hint)
    raise CheckpointMismatchError("; ".join(parts))


def _not_found(path: Path, what: str, env_var: str | None) -> CheckpointNotFoundError:
    hint = f" (set {env_var} to the file's path)" if env_var else ""
    kind = "is a directory, not a file" if path.is_dir() else "not found"
    return CheckpointNotFoundError(f"{what} weights {kind}: {path}{hint}")


def load_state_dict_file(path: str | os.PathLike, *, what: str = "model",
                         env_var: str | None = None) -> dict[str, torch.Tensor]:
    """Read a weights file on the CPU (tensors only: ``weights_only=True``) and unwrap its state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise _not_found(path, what, env_var)
    try:
        try:
            # Memory-mapped: a 1.7 GB checkpoint is not copied into RAM before it is copied into the model.
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) format
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        text = str(err)
        if "Unsupported global" in text:
            # Never fall back to full unpickling: that would run code from the file.
            raise CheckpointReadError(
                f"{what} weights at {path} hold Python objects besides tensors (a training state with "
                f"optimizer or RNG states?), which are not unpickled for safety: use a weights file instead "
                f"(a run's model.pt/ema.pt, or `rguide export-weights`)") from err
        # torch's weights-only message is long and suggests unsafe loading; keep only its diagnosis.
        reason = text[text.find("WeightsUnpickler error:"):] if "WeightsUnpickler error:" in text else text
        raise CheckpointReadError(f"{what} weights at {path} could not be read as a torch file "
                                  f"(truncated download or not a checkpoint?): {' '.join(reason.split())[:300]}") from err
    return extract_state_dict(obj, str(path))


def load_weights(model: torch.nn.Module, path: str | os.PathLike, *, what: str = "model",
                 env_var: str | None = None) -> torch.nn.Module:
    """Load ``path`` into ``model`` strictly, by key and shape, and return the model.

    ``what`` names the weights in messages ("robust classifier"); ``env_var``
    is the variable a user sets to point at the file, named in the not-found
    message. Each floating tensor is cast to the dtype of the parameter it
    fills, so an fp16 file loads into an fp32 model and vice versa.
    """
    state = load_state_dict_file(path, what=what, env_var=env_var)
    check_compatible(model, state, what, str(path))
    own = model.state_dict()
    cast = {k: v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v
            for k, v in state.items()}
    model.load_state_dict(cast, strict=True)
    return model


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write the model's state dict as a plain dict of CPU tensors, atomically.

    Plain, so the file loads here and into the public ADM code alike. With
    ``metadata`` (JSON-able: config, seed, versions), ``<path>.json`` is
    written beside it, with the file's sha256 and parameter count added
    under ``"weights_file"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: torch.save(state, p))
    if metadata is not None:
        meta = dict(metadata)
        meta["weights_file"] = {"name": path.name, "sha256": sha256_file(path), "tensors": len(state),
                                "parameters": sum(p.numel() for p in model.parameters()),
                                "torch": torch.__version__}
        atomic_write_text(path.with_name(path.name + ".json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def read_metadata(path: str | os.PathLike) -> dict | None:
    """The JSON written beside a weights file by :func:`save_weights`, or None if there is none."""
    side = Path(path).with_name(Path(path).name + ".json")
    return json.loads(side.read_text()) if side.is_file() else None
