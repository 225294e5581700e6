"""AutoAttack (Croce & Hein 2020) from its official implementation on PyPI, ``pyautoattack``.

AutoAttack assumes images in [0, 1] and clips its iterates there. Our models
take [-1, 1], so :class:`UnitInterval` shows AutoAttack a model of
x01 -> model(2 x01 - 1) and the radius stays in [0, 1] units; the adversarial
images come back mapped to [-1, 1]. (Feeding [-1, 1] images to an attack that
clips to [0, 1], as the TMDC code did through torchattacks, silently destroys
the negative half of every image.)
"""
from __future__ import annotations

import torch


class UnitInterval(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.model(x01 * 2.0 - 1.0)


def version() -> str:
    from importlib.metadata import version as v

    return f"pyautoattack {v('pyautoattack')}"


def autoattack(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, *, norm: str, eps01: float,
               seed: int = 0, version_name: str = "standard", batch_size: int = 100,
               device: str = "cpu") -> torch.Tensor:
    """Adversarial images in [-1, 1] from AutoAttack run on ``model`` (which takes [-1, 1])."""
    try:
        from pyautoattack import AutoAttack
    except ImportError as err:  # an optional dependency: say how to get it
        raise ImportError("AutoAttack needs the package 'pyautoattack' (pip install pyautoattack)") from err
    import logging

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    wrapped = UnitInterval(model).eval()
    aa = AutoAttack(wrapped, norm={"linf": "Linf", "l2": "L2"}[norm], eps=float(eps01), seed=int(seed),
                    version=version_name, device=device)
    aa.verbose = False
    x01 = ((x.detach() + 1.0) / 2.0).clamp(0.0, 1.0)
    adv01, _ = aa.run_standard_evaluation(x01, labels, batch_size=batch_size)
    return (adv01.detach() * 2.0 - 1.0).clamp(-1.0, 1.0)
