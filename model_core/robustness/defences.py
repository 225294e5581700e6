"""The three defences of a preset, each as a predictor and as a differentiable model for attacks.

* ``vanilla`` / ``robust``: the preset's time-dependent classifiers at t = 0
  (clean images are x_0); one network evaluation per image.
* ``diffusion``: the preset's diffusion model as a classifier
  (``model_core.diffusion_classifier``); predictions use the staged schedule,
  the attack model is the fixed-draw (or EOT) logits over all classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from model_core.robustness.threats import DEFENCE_SUMMARIES, DEFENCES


class AtTimestep(torch.nn.Module):
    """``classifier(x, t)`` as ``x -> logits`` at one fixed timestep."""

    def __init__(self, classifier: torch.nn.Module, t: int = 0):
        super().__init__()
        self.classifier = classifier
        self.t = int(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x, torch.full((x.shape[0],), self.t, dtype=torch.long, device=x.device))


@dataclass
class Defence:
    name: str
    attack_model: torch.nn.Module             # x in [-1, 1] -> logits, differentiable in x
    predict_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]   # x -> (predictions, probabilities)
    evaluations_per_image: int                # network evaluations of one prediction
    evaluations_per_gradient: int             # network evaluations (forward + backward) of one attack gradient
    settings: dict = field(default_factory=dict)

    def predict(self, x: torch.Tensor, batch_size: int = 100, progress: Callable[[int], None] | None = None):
        """``progress(k)``: k more images done (fractions of an image for the diffusion classifier, which
        reports as its network evaluations go)."""
        preds, probs = [], []
        for i in range(0, x.shape[0], batch_size):
            if self.name == "diffusion" and progress is not None:
                per = self.evaluations_per_image
                p, q = self.predict_fn(x[i:i + batch_size], lambda evals: progress(evals / per))
            else:
                p, q = self.predict_fn(x[i:i + batch_size])
                if progress is not None:
                    progress(min(batch_size, x.shape[0] - i))
            preds.append(p.cpu())
            probs.append(q.cpu())
        return torch.cat(preds), torch.cat(probs)

    def describe(self) -> dict:
        return {"name": self.name, "summary": DEFENCE_SUMMARIES[self.name],
                "evaluations_per_image": self.evaluations_per_image,
                "evaluations_per_gradient": self.evaluations_per_gradient, **self.settings}


def classifier_defence(name: str, classifier: torch.nn.Module, source: str = "") -> Defence:
    model = AtTimestep(classifier, 0).eval()

    @torch.no_grad()
    def predict(x):
        logits = model(x).float()
        return logits.argmax(1), torch.softmax(logits, 1)

    return Defence(name, model, predict, 1, 1, {"timestep": 0, "weights": source})


def diffusion_defence(classifier, *, attack_timesteps: int | None = None, eot: bool = False,
                      eot_samples: int = 1, source: str = "") -> Defence:
    """``classifier`` is a :class:`~model_core.diffusion_classifier.classifier.DiffusionClassifier`."""
    module = classifier.logits_module(attack_timesteps, eot=eot)

    def predict(x, progress=None):
        res = classifier.classify(x, progress=progress)
        return res.predictions, res.probabilities

    noise = ("fresh timesteps and noise at every gradient pass, averaged over "
             f"{eot_samples} passes (EOT)") if eot else \
        "fixed: the first draws of the prediction's own (timestep, noise) list"
    return Defence("diffusion", module, predict, classifier.describe()["evaluations_per_image"],
                   module.evaluations_per_call * max(int(eot_samples), 1),
                   {**classifier.describe(), "weights": source,
                    "attack_gradient": {"timesteps": module.timesteps, "classes": classifier.num_classes,
                                        "draws": noise, "eot_samples": int(eot_samples) if eot else 1,
                                        "elimination": "none (every class scored: elimination is not differentiable)"}})


def load_defences(pipeline, names=DEFENCES, *, schedule: str | None = None, seed: int = 0,
                  attack_timesteps: int | None = None, eot: bool = False, eot_samples: int = 1,
                  max_batch: int = 250) -> dict[str, Defence]:
    from model_core.diffusion_classifier.classifier import from_pipeline
    from model_core.diffusion_classifier.schedule import DEMO_SCHEDULE

    out: dict[str, Defence] = {}
    for name in names:
        if name not in DEFENCES:
            raise ValueError(f"defence {name!r} is unknown; choose from {', '.join(DEFENCES)}")
        if name == "diffusion":
            dc = from_pipeline(pipeline, schedule=schedule or DEMO_SCHEDULE, seed=seed, max_batch=max_batch)
            out[name] = diffusion_defence(dc, attack_timesteps=attack_timesteps, eot=eot, eot_samples=eot_samples,
                                          source=pipeline.sources["diffusion"])
        else:
            if name not in pipeline.classifiers:
                raise ValueError(f"preset {pipeline.preset.name!r} has no {name} classifier")
            out[name] = classifier_defence(name, pipeline.classifiers[name], pipeline.sources[f"classifier:{name}"])
    return out
