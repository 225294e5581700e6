"""The tiny runs that one process (in the test) and torchrun ranks (ddp_runs.py) both train."""
from test_training import PROCESS, TINY_CLASSIFIER, TINY_UNET, tiny_data

from model_core.training.classifier import ClassifierTrainConfig
from model_core.training.diffusion import DiffusionTrainConfig

STEPS = 4


def data():
    return tiny_data(40)


def clf_cfg(**kw):
    # batch 9 on 2 ranks: parts of 5 and 4, so the loss weighting matters; the attack's early stop differs per sample, so it is exercised per part.
    base = dict(model=TINY_CLASSIFIER, data="tiny", process=PROCESS, batch_size=9, total_steps=STEPS,
                lr_start=1e-3, lr_end=2e-4, weight_decay=0.05, seed=3, ckpt_every=100, eps=0.5, step_size=0.2,
                attack_steps=3)
    base.update(kw)
    return ClassifierTrainConfig(**base)


def diff_cfg():
    # Dropout off: its masks come from each rank's own RNG, so with it two ranks are another draw than one.
    return DiffusionTrainConfig(model={**TINY_UNET, "dropout": 0.0}, process={**PROCESS, "learn_sigma": True},
                                data="tiny", batch_size=9, total_steps=STEPS, lr_start=1e-3, lr_end=1e-3,
                                ema_decay=0.9, seed=5, ckpt_every=100)
