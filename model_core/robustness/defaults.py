"""Which attack measures a preset's classifiers, unless told otherwise (torch-free).

The paper trains and attacks with L2 eps 0.5, step 0.083 (eps/6), 7 steps
(Kawar et al., Sec. 5.1). A preset whose robust classifier was trained
against another attack (``extra.training.robust`` in its JSON: the demo
trains at eps 2.0 on 28x28 digits) is measured at *that* attack by default,
so the plain command tests the robustness the classifier was built for.
Training (:class:`~model_core.training.classifier.ClassifierTrainConfig`)
and evaluation (:func:`~model_core.robustness.evaluate.evaluate_classifier`)
take these same four names.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class AttackSettings:
    attack: str = "l2"       # threat model: "l2" or "linf"
    eps: float = 0.5         # radius
    step_size: float = 0.083
    attack_steps: int = 7

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PAPER_ATTACK = AttackSettings()
ATTACK_FIELDS = tuple(f.name for f in fields(AttackSettings))


def paper_step_size(eps: float) -> float:
    """The paper's step for radius ``eps``: eps/6 (0.083 at 0.5), rounded to 6 decimals."""
    return round(eps * PAPER_ATTACK.step_size / PAPER_ATTACK.eps, 6)


def preset_attack(preset) -> dict[str, Any]:
    """The attack a preset's robust classifier was trained against, as far as its recipe says (maybe nothing)."""
    robust = preset.extra.get("training", {}).get("robust", {})
    return {k: robust[k] for k in ATTACK_FIELDS if robust.get(k) is not None}


def attack_settings(preset=None, overrides: Mapping[str, Any] | None = None) -> AttackSettings:
    """``overrides`` first (None means not given), then the preset's robust training attack, then the paper's.

    An ``eps`` override without a ``step_size`` one takes the paper's eps/6,
    not the recipe's step for another radius.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(ATTACK_FIELDS))
    if unknown:
        raise TypeError(f"unknown attack settings {unknown}; known: {', '.join(ATTACK_FIELDS)}")
    values = {**PAPER_ATTACK.to_dict(), **(preset_attack(preset) if preset is not None else {}), **given}
    if "eps" in given and "step_size" not in given:
        values["step_size"] = paper_step_size(given["eps"])
    return AttackSettings(**values)
