"""Guidance providers: what turns (x_t, model timestep, labels) into grad_{x_t} log p(y | x_t, t).

The trajectory loop asks a provider for the unscaled gradient of each guided
trajectory and hands it to the sampler, so any sampler is guided by any
provider. A preset's classifier entry says which *kind* of provider it is
(``"kind"``, default ``adm_classifier``); this module is the torch-free list
of kinds, so that presets are validated at load without importing torch.

A kind's target (``"module:attribute"``, imported only when a pipeline loads
the preset) is a builder

    build(entry: dict, weights: WeightsSpec, *, device: str) -> GuidanceProvider

taking the preset's classifier entry and its resolved weights spec. Adding a
classifier kind is its module (a builder and a provider class) plus one
``register`` line below; presets then name it in ``classifiers.<method>.kind``.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
DEFAULT_KIND = "adm_classifier"


@runtime_checkable
class GuidanceProvider(Protocol):
    """One guiding signal. ``source`` says where its weights came from (provenance).

    A provider backed by one network may expose it as ``module`` (the
    pipeline's ``classifiers`` lists those, for robustness evaluation).
    """
    source: str

    def grad_log_prob(self, x_t: torch.Tensor, model_t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Unscaled grad_{x_t} log p(y | x_t, t), shape of ``x_t``.

        ``model_t`` is the original training index (999, 995, ... for a
        respaced process), never the respaced one.
        """
        ...


@dataclass(frozen=True)
class ProviderKind:
    name: str
    target: str   # "package.module:builder"
    summary: str


_KINDS: dict[str, ProviderKind] = {}


def register(kind: ProviderKind, *, replace: bool = False) -> ProviderKind:
    if not NAME_PATTERN.match(kind.name):
        raise ValueError(f"classifier kind {kind.name!r} must be 1-32 characters of a-z, 0-9 and _, starting "
                         "with a letter")
    if ":" not in kind.target:
        raise ValueError(f"classifier kind {kind.name!r}: target {kind.target!r} must be 'module:attribute'")
    if kind.name in _KINDS and not replace:
        raise ValueError(f"classifier kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def kinds() -> tuple[str, ...]:
    return tuple(_KINDS)


def get(name: str | None) -> ProviderKind:
    """The kind of that name; ``None`` means the default (``adm_classifier``)."""
    try:
        return _KINDS[DEFAULT_KIND if name is None else name]
    except (KeyError, TypeError):
        raise ValueError(f"classifier kind {name!r} is unknown; choose one of {', '.join(_KINDS)}") from None


def load(name: str | None) -> Callable[..., GuidanceProvider]:
    """The kind's builder (imports its module, and so torch)."""
    module, _, attr = get(name).target.partition(":")
    return getattr(importlib.import_module(module), attr)


def as_provider(obj: Any) -> GuidanceProvider:
    """A provider as is; a bare ``torch.nn.Module`` is taken as an ADM-style time-dependent classifier."""
    if hasattr(obj, "grad_log_prob"):
        return obj
    from model_core.sampling.adm_classifier import ClassifierGuidance

    return ClassifierGuidance(obj)


register(ProviderKind(
    "adm_classifier", "model_core.sampling.adm_classifier:build",
    "ADM's time-dependent encoder classifier p(y | x_t, t): architecture flags in 'model', weights in 'checkpoint'"))
