"""Guidance providers: what turns (x_t, model timestep, labels) into grad_{x_t} log p(y | x_t, t).

The trajectory loop asks a provider for the unscaled gradient of each guided
trajectory and hands it to the sampler, so any sampler is guided by any
provider. A preset's classifier entry says which *kind* of provider it is
(``"kind"``, default ``adm_classifier``); this module is the torch-free list
of kinds, so that presets are validated at load without importing torch.

A kind's target (``"module:attribute"``, imported only when a pipeline loads
the preset) is a builder

    build(entry: dict, weights: WeightsSpec, *, device: str) -> GuidanceProvider

taking the preset's classifier entry and its resolved weights spec. A kind
that guides with the preset's own diffusion model instead of a network of its
own (``own_network=False``) is built with three more keywords, ``unet`` (the
loaded UNet), ``unet_source`` (its provenance) and ``preset``. Adding a classifier kind is its module (a builder
and a provider class) plus one ``register`` line below; presets then name it
in ``classifiers.<method>.kind``.

A kind also says, torch-free, what one guided step costs per image
(``cost(entry, num_classes)``), so that evaluation rows and help texts report
it without loading a model.

Randomness: a provider with ``draws_noise = True`` is handed, per call, one
CPU generator per row (``generators=``), derived by the loop from that
trajectory's seed and the step (``model_core.sampling.loop.guidance_generator``),
never the trajectory's own stream: so a provider's draws neither shift the
sampler's noise nor differ between batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from model_core.registry import LazyRegistry

if TYPE_CHECKING:
    import torch

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
class StepCost:
    """Network evaluations one guided step adds per image, beyond the sampler's one UNet forward."""
    unet: int = 0         # extra UNet forwards
    classifier: int = 0   # classifier forward + backward pairs


def _one_classifier_gradient(entry: dict, num_classes: int) -> StepCost:
    return StepCost(classifier=1)


@dataclass(frozen=True)
class ProviderKind:
    name: str
    target: str   # "package.module:builder"
    summary: str
    # Loads a network of its own from the entry's 'model' and 'checkpoint' (which training, attacks and the
    # analysis tools then use); False: guides with the preset's diffusion model and gets it from the pipeline.
    own_network: bool = True
    # Needs eps(x_t, t, y) for every class, so only a preset whose diffusion model is class-conditional has it.
    needs_class_cond: bool = False
    cost: Callable[[dict, int], StepCost] = _one_classifier_gradient


_KINDS: LazyRegistry[ProviderKind] = LazyRegistry("classifier kind", default=DEFAULT_KIND)
# get(None) is the default kind; load(name) imports the kind's builder (and so torch).
register, unregister, kinds, get, load = (_KINDS.register, _KINDS.unregister, _KINDS.names, _KINDS.get, _KINDS.load)


def as_provider(obj: Any) -> GuidanceProvider:
    """A provider as is; a bare ``torch.nn.Module`` is taken as an ADM-style time-dependent classifier."""
    if hasattr(obj, "grad_log_prob"):
        return obj
    from model_core.sampling.adm_classifier import ClassifierGuidance

    return ClassifierGuidance(obj)


def step_cost(entry: dict, num_classes: int) -> StepCost:
    """What one guided step costs per image with this classifier entry (its kind's rule)."""
    return get(entry.get("kind")).cost(entry, num_classes)


# The diffusion model as its own classifier (model_core/sampling/diffusion_guidance.py): its torch-free
# settings live here so that presets, the API and evaluation rows read them without torch.
DIFFUSION_BAYES_KIND = "diffusion_bayes"
DEFAULT_DIFFUSION_DRAWS = 2   # noise levels per step and image; each costs one UNet forward per class


def diffusion_draws(entry: dict) -> int:
    """The entry's ``draws`` (noise levels above t at which every class is scored), checked."""
    draws = entry.get("draws", DEFAULT_DIFFUSION_DRAWS)
    if isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= 64:
        raise ValueError(f"draws must be a whole number in 1..64, got {draws!r}")
    return draws


def _diffusion_cost(entry: dict, num_classes: int) -> StepCost:
    # eps(x_t, t, y') for every class, plus every class at every draw's noise level.
    return StepCost(unet=num_classes * (diffusion_draws(entry) + 1))


register(ProviderKind(
    "adm_classifier", "model_core.sampling.adm_classifier:build",
    "ADM's time-dependent encoder classifier p(y | x_t, t): architecture flags in 'model', weights in 'checkpoint'"))
register(ProviderKind(
    DIFFUSION_BAYES_KIND, "model_core.sampling.diffusion_guidance:build",
    "the preset's class-conditional diffusion model as its own classifier (Bayes identity; class weights from "
    "the diffusion classifier's denoising losses at 'draws' noise levels above t)",
    own_network=False, needs_class_cond=True, cost=_diffusion_cost))
