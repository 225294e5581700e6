"""Timestep respacing specs, with the semantics of the public ADM code.

Torch-free on purpose: the API validates ``steps`` at the edge with this
module and must not import torch at request time.

* ``"250"`` keeps 250 of the 1000 training steps, striding uniformly (with
  rounding) so that both the first and the last step are kept.
* ``"10,15,20"`` splits the 1000 steps into three equal sections and keeps
  10, 15 and 20 steps of them respectively.
* ``"ddim25"`` keeps an exact integer stride: ``range(0, 1000, 40)``.
* ``"logsnr20"`` keeps 20 steps uniform in log-SNR rather than in t: the
  training indices whose log-SNR is nearest to 20 equally spaced values from
  that of the noisiest step to that of step 0 (both kept); where two targets
  share an index (many steps, near t = 0) the later moves to the next free
  index. It needs the noise schedule (``noise_schedule`` or ``alphas_cumprod``).

Every spec names *original training indices* (integers): a network never sees
a fractional or respaced timestep, whichever sampler runs the steps.
"""
from __future__ import annotations

from dataclasses import dataclass

from model_core.sampling import registry



LOGSNR_PREFIX = "logsnr"


def space_timesteps(num_timesteps: int, section_counts: str | list[int], *, noise_schedule: str = "linear",
                    alphas_cumprod=None) -> list[int]:
    """Return the sorted original timestep indices kept by a respacing spec.

    ``noise_schedule`` (or the process's own ``alphas_cumprod``) matters only
    for ``logsnrN``.
    """
    if isinstance(section_counts, str) and section_counts.startswith(LOGSNR_PREFIX):
        want = _positive_int(section_counts[len(LOGSNR_PREFIX):], section_counts)
        if alphas_cumprod is None:
            from model_core.noise_schedules import alphas_cumprod as schedule_alphas

            alphas_cumprod = schedule_alphas(noise_schedule, num_timesteps)
        return log_snr_timesteps(want, alphas_cumprod, section_counts)
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            want = _positive_int(section_counts[len("ddim"):], section_counts)
            for stride in range(1, num_timesteps + 1):
                if len(range(0, num_timesteps, stride)) == want:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(
                f"steps {section_counts!r}: no integer stride gives exactly {want} "
                f"of {num_timesteps} steps; use a plain count such as {want!s}"
            )
        section_counts = [_positive_int(part, section_counts) for part in section_counts.split(",")]
    n_sections = len(section_counts)
    base, extra = divmod(num_timesteps, n_sections)
    kept: list[int] = []
    start = 0
    for i, count in enumerate(section_counts):
        size = base + (1 if i < extra else 0)
        if count > size:
            raise ValueError(
                f"steps: cannot keep {count} steps of a section of {size} "
                f"(of {num_timesteps} training steps)"
            )
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


def log_snr_timesteps(count: int, alphas_cumprod, spec: str = "") -> list[int]:
    """``count`` distinct training indices, uniform in log-SNR (see the module docstring)."""
    import numpy as np

    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    total = len(abar)
    if count > total:
        raise ValueError(f"steps {spec!r}: more steps than the {total} the model was trained with")
    half_log_snr = 0.5 * (np.log(abar) - np.log1p(-abar))  # lambda_t = log(alpha_t / sigma_t), falling with t
    targets = np.linspace(half_log_snr[-1], half_log_snr[0], count)
    nearest = np.abs(half_log_snr[None, :] - targets[:, None]).argmin(axis=1)
    kept = sorted(int(k) for k in nearest)
    for j in range(1, count):  # collisions (several targets between two indices) move toward t = T - 1 ...
        kept[j] = max(kept[j], kept[j - 1] + 1)
    kept[-1] = min(kept[-1], total - 1)
    for j in range(count - 2, -1, -1):  # ... and back if that ran past the last index
        kept[j] = min(kept[j], kept[j + 1] - 1)
    return kept


def _positive_int(text: str, spec: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"steps {spec!r} is not a step count: use e.g. '250', 'ddim50', 'logsnr20' or "
                         "'10,15,20'") from None
    if value < 1:
        raise ValueError(f"steps {spec!r}: the number of steps must be at least 1")
    return value


DEFAULT_SAMPLER = "ddpm"  # for a plain step count with no sampler named (the ADM scripts' default)


@dataclass(frozen=True)
class StepSpec:
    sampler: str
    spec: str
    num_steps: int
    timesteps: tuple[int, ...]


def parse_steps(spec: str | int, sampler: str | None = None, num_timesteps: int = 1000, *,
                noise_schedule: str = "linear", alphas_cumprod=None) -> StepSpec:
    """Validate a steps spec and say which sampler it implies.

    ``ddimN`` implies the DDIM sampler; a plain count (or ``logsnrN``) uses
    ``sampler`` (default ``ddpm``). A DDIM spec with ``sampler="ddpm"`` is
    refused rather than silently reinterpreted. The schedule arguments place
    ``logsnrN`` steps (see :func:`space_timesteps`).
    """
    if isinstance(spec, bool):
        raise ValueError("steps must be a step count such as 250, '250' or 'ddim50', not a boolean")
    if sampler is not None:
        registry.get(sampler)  # raises, naming the registered samplers
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"steps must be an integer or a string such as '250' or 'ddim50', not {type(spec).__name__}")
    text = spec.strip().lower().replace(" ", "")
    if not text:
        raise ValueError("steps is empty: use e.g. '250' or 'ddim50'")
    implied = registry.implied_by_spacing(text)
    if implied is not None:
        if sampler is not None and sampler != implied:
            raise ValueError(f"steps {spec!r} is a {implied.upper()} spacing but sampler is {sampler!r}")
        chosen = implied
    else:
        chosen = sampler or DEFAULT_SAMPLER
    kept = space_timesteps(num_timesteps, text, noise_schedule=noise_schedule, alphas_cumprod=alphas_cumprod)
    if len(kept) > num_timesteps:
        raise ValueError(f"steps {spec!r}: more steps than the {num_timesteps} the model was trained with")
    return StepSpec(sampler=chosen, spec=text, num_steps=len(kept), timesteps=tuple(kept))


def resolve_steps(steps: str | int | None, sampler: str | None, *, default_steps: str, default_sampler: str,
                  num_timesteps: int = 1000, noise_schedule: str = "linear") -> StepSpec:
    """A request's steps and sampler, with the preset's defaults filled in: the one rule for every caller.

    No steps given: the preset's default steps with its default sampler
    (unless a sampler is named). Steps given but no sampler: the sampler
    those steps imply (``ddim25`` -> DDIM, a plain count -> DDPM), not the
    preset's default, so that ``steps: "250"`` means what it means in the ADM
    scripts on any preset. An empty sampler counts as none.
    """
    given = steps is not None
    return parse_steps(steps if given else default_steps, sampler or (None if given else default_sampler),
                       num_timesteps=num_timesteps, noise_schedule=noise_schedule)
