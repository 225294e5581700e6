"""The ``adm_classifier`` guidance provider: ADM's time-dependent encoder classifier p_phi(y | x_t, t).

A preset's classifier entry of this kind gives the architecture (``model``,
ADM's classifier flags) and the weights (``checkpoint``); vanilla and robust
classifiers (Kawar et al.) are both of this kind and differ only in weights.
"""
from __future__ import annotations

import torch

from model_core.models.adm import classifier_from_config
from model_core.models.loading import build_model
from model_core.sampling.guidance import log_prob_grad


class ClassifierGuidance:
    """grad_{x_t} log softmax(classifier(x_t, t))[y], parameters untouched."""

    def __init__(self, classifier: torch.nn.Module, source: str = "in-memory"):
        self.module = classifier
        self.source = source

    def grad_log_prob(self, x_t: torch.Tensor, model_t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return log_prob_grad(self.module, x_t, model_t, labels)


def build(entry: dict, weights, *, device: str) -> ClassifierGuidance:
    model, source = build_model(classifier_from_config, entry["model"], weights, device)
    return ClassifierGuidance(model, source)
