"""The analyses, by name: the one list the CLI, the API, the worker and the pages read (torch-free).

Each kind's ``target`` (``"module:run"``) is imported only when it runs, so
the API validates requests without torch. ``command`` is how the CLI spells
it, for sidecars' reproduction hints.
"""
from __future__ import annotations

from dataclasses import dataclass

from model_core.registry import LazyRegistry


@dataclass(frozen=True)
class AnalysisKind:
    name: str
    target: str    # "package.module:run"
    command: str   # the rguide command that runs it
    summary: str   # one line for help texts, the API docs and the pages
    paper: str     # which figure or table of Kawar et al. it makes


_KINDS: LazyRegistry[AnalysisKind] = LazyRegistry("analysis")
register, names, get, load = _KINDS.register, _KINDS.names, _KINDS.get, _KINDS.load

register(AnalysisKind(
    "gradients", "model_core.analysis.gradients:run", "rguide viz gradients",
    "input gradients of log p(y | x_t, t) per classifier and timestep, min-max normalised, with alignment numbers",
    "Figure 3"))
register(AnalysisKind(
    "maximize", "model_core.analysis.maximize:run", "rguide viz maximize",
    "class maximisation: targeted L2 PGD at t = 0 per classifier, and how often another network reads the target",
    "Figure 4"))
register(AnalysisKind(
    "trajectory", "model_core.analysis.trajectory:run", "rguide viz trajectory",
    "the predicted x_0 at uniformly spaced steps of guided runs, per arm, same label and seed",
    "Figure 5"))
register(AnalysisKind(
    "compare", "model_core.analysis.compare:run", "rguide viz compare",
    "seed-matched comparison sheet: every arm side by side for each label and seed",
    "Figure 2"))
register(AnalysisKind(
    "sweep", "model_core.analysis.sweep:run", "rguide sweep",
    "FID, precision, recall and label accuracy per method across guidance scales, as curves and a table",
    "Tables 5 and 6"))


def entries() -> tuple[AnalysisKind, ...]:
    return tuple(_KINDS)
