"""Timestep schedules of the diffusion classifier, with staged elimination (torch-free).

A schedule is a list of *stages*. Stage i scores the classes still in the
running on the first ``timesteps`` (cumulative) timesteps of one fixed list,
then keeps the ``keep`` classes with the smallest mean denoising error; the
last stage's survivors are ranked by their error over all their timesteps.
Scores computed in an earlier stage are reused, never recomputed.

Written as text: ``"50:5,500"`` means stage 1 on 50 timesteps for every class
keeping the best 5, stage 2 up to 500 timesteps for those 5. ``"100"`` is the
full schedule (every class on 100 timesteps, no elimination).

The paper (following Li et al.) uses ``50:5,500`` on CIFAR-10: 50 x 10 + 450 x 5
= 2,750 network evaluations per image. On one CPU core the demo UNet costs about
10-15 ms per evaluation, so the demo's default is the same shape scaled down:
``DEMO_SCHEDULE``.
"""
from __future__ import annotations

from dataclasses import dataclass

from model_core.errors import SettingError

PAPER_SCHEDULE = "50:5,500"
DEMO_SCHEDULE = "10:3,30"
NOISE_POLICIES = ("shared",)   # one noise draw per timestep, the same for every class (and every image)
TIMESTEP_POLICIES = ("stratified", "uniform")


@dataclass(frozen=True)
class Stage:
    timesteps: int        # cumulative number of timesteps scored once this stage is done
    keep: int | None      # classes kept for the next stage (None: last stage)


def parse_schedule(spec: str, num_classes: int, *, setting: str = "schedule") -> tuple[Stage, ...]:
    """Stages from ``"T1:K1,T2:K2,...,Tn"``; checks counts rise and kept classes fall."""
    text = str(spec).replace(" ", "")
    if not text:
        raise SettingError(setting, f"{{{setting}}} is empty; e.g. {DEMO_SCHEDULE!r} or {PAPER_SCHEDULE!r}")
    stages: list[Stage] = []
    parts = text.split(",")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        t_text, _, k_text = part.partition(":")
        try:
            t = int(t_text)
            k = int(k_text) if k_text else None
        except ValueError:
            raise SettingError(setting, f"{{{setting}}} {spec!r}: stage {part!r} is not 'TIMESTEPS' or "
                                        "'TIMESTEPS:KEEP' with whole numbers") from None
        if last and k is not None:
            raise SettingError(setting, f"{{{setting}}} {spec!r}: the last stage ranks its survivors; give it no "
                                        f"':KEEP' (e.g. '{t}')")
        if not last and k is None:
            raise SettingError(setting, f"{{{setting}}} {spec!r}: every stage but the last needs ':KEEP'")
        if t < 1:
            raise SettingError(setting, f"{{{setting}}} {spec!r}: timesteps must be >= 1")
        if stages and t <= stages[-1].timesteps:
            raise SettingError(setting, f"{{{setting}}} {spec!r}: timesteps are cumulative and must rise "
                                        f"from stage to stage")
        if k is not None:
            prev = stages[-1].keep if stages else num_classes
            if not 1 <= k < prev:
                raise SettingError(setting, f"{{{setting}}} {spec!r}: stage {i + 1} keeps {k} classes; it must "
                                            f"keep at least 1 and fewer than the {prev} it scores")
        stages.append(Stage(t, k))
    return tuple(stages)


def format_schedule(stages: tuple[Stage, ...]) -> str:
    return ",".join(f"{s.timesteps}:{s.keep}" if s.keep is not None else str(s.timesteps) for s in stages)


def evaluations_per_image(stages: tuple[Stage, ...], num_classes: int) -> int:
    """Network evaluations one image costs under the schedule."""
    total, alive, done = 0, num_classes, 0
    for s in stages:
        total += (s.timesteps - done) * alive
        done = s.timesteps
        if s.keep is not None:
            alive = s.keep
    return total


def max_timesteps(stages: tuple[Stage, ...]) -> int:
    return stages[-1].timesteps
