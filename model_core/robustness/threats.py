"""The attacks and defences of the robustness report, and the pixel-unit convention (torch-free).

**Units.** Every radius here is in [0, 1] pixel units at the native
resolution, the convention of RobustBench and of the TMDC paper (eps 0.05).
The project's models take images in [-1, 1], so a radius of r in [0, 1] units
is 2r in model units (for Linf and L2 alike: the map x -> 2x - 1 doubles every
norm). ``model_eps`` does that conversion, and nothing else does.

This module is the one list of attack names (``rguide robustness --attacks``,
the report) and of defence names (``rguide classify --method``,
``POST /v1/classifications``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

DEFENCES = ("vanilla", "robust", "diffusion")
DEFENCE_SUMMARIES = {
    "vanilla": "the preset's vanilla time-dependent classifier at t = 0",
    "robust": "the preset's adversarially trained time-dependent classifier at t = 0",
    "diffusion": "the preset's class-conditional diffusion model as a classifier (Monte-Carlo denoising errors)",
}
SETTINGS = ("transfer", "whitebox")
# The diffusion classifier's white-box gradient estimators: "fixed" (the first draws of the prediction's own
# (timestep, noise) list, the same at every pass) and "eot" (fresh draws at every pass, several passes averaged).
GRADIENTS = ("fixed", "eot")


@dataclass(frozen=True)
class AttackSpec:
    name: str
    kind: str          # "fgsm", "pgd" or "autoattack"
    norm: str          # "linf" or "l2"
    eps: float         # [0, 1] pixel units
    steps: int         # gradient steps (AutoAttack: its own fixed budget, recorded as 0)
    summary: str

    def to_dict(self) -> dict:
        return asdict(self)


ATTACKS: dict[str, AttackSpec] = {a.name: a for a in (
    AttackSpec("fgsm", "fgsm", "linf", 0.05, 1, "FGSM, Linf eps 0.05 (the paper's)"),
    AttackSpec("pgd", "pgd", "linf", 0.05, 40, "PGD, Linf eps 0.05, 40 steps of 2.5 eps / 40, random start (the paper's)"),
    AttackSpec("autoattack", "autoattack", "linf", 0.05, 0, "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), Linf eps 0.05"),
    # L2 eps 1.0 in [0, 1] units is 2.0 in the models' [-1, 1] units: the radius the demo's robust classifier was
    # trained at (docs/training.md). The paper's L2 0.05 would be a per-pixel RMS change of 0.002 on 28x28 digits.
    AttackSpec("fgm-l2", "fgsm", "l2", 1.0, 1, "FGM, L2 eps 1.0: one gradient step of L2 length eps"),
    AttackSpec("pgd-l2", "pgd", "l2", 1.0, 40,
               "PGD, L2 eps 1.0 (= the demo robust classifier's training radius 2.0 in [-1, 1] units), 40 steps"),
    AttackSpec("autoattack-l2", "autoattack", "l2", 1.0, 0, "AutoAttack standard, L2 eps 1.0"),
)}
DEFAULT_ATTACKS = tuple(ATTACKS)
NORMS = ("linf", "l2")
NORM_LABELS = {"linf": "Linf", "l2": "L2"}
# Radii of the report's eps sweep (sanity check "accuracy falls as eps grows"), per threat model, [0, 1] units.
SANITY_EPS = {"linf": (0.05, 0.1, 0.2, 0.3), "l2": (0.5, 1.0, 2.0, 3.0)}


def one_step_of(spec: AttackSpec) -> AttackSpec | None:
    """The one-step attack of the same threat model (norm and eps) as the iterative ``spec``, if any."""
    return next((a for a in ATTACKS.values() if a.kind == "fgsm" and a.norm == spec.norm and a.eps == spec.eps),
                None)


def model_eps(eps01: float) -> float:
    """A radius in [0, 1] pixel units as a radius in the models' [-1, 1] units."""
    return 2.0 * float(eps01)


def parse_attacks(text: str | list[str] | tuple[str, ...]) -> tuple[AttackSpec, ...]:
    from model_core.errors import SettingError

    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise SettingError("attacks", f"{{attacks}}: unknown {unknown or 'nothing given'}; choose from "
                                      f"{', '.join(ATTACKS)}")
    return tuple(ATTACKS[n] for n in dict.fromkeys(names))
