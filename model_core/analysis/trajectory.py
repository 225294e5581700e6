"""Figure 5: the predicted final image at uniformly spaced steps of guided runs, one row per arm, same label and seed.

A frame is what the sampler's step callback shows (``StepResult.pred_xstart``:
the model's x_0 prediction at that step, clipped, guided for DDIM), except
the frame of the last step, which is the sample itself: DDPM adds the
guidance shift Sigma * s * grad even at t = 0, so the last prediction is not
quite the image the run returns, and a trajectory that does not end on its
image would mislead. Frames are taken at steps round(linspace(0, S - 1, F))
of S sampling steps, so the first frame is the prediction from pure noise and
the last is the final image.

``sample_with_frames`` is also what stores the generation API's
``"previews": N`` with a job.
"""
from __future__ import annotations

import numpy as np
import torch

from model_core.analysis import render
from model_core.analysis.common import Progress, UploadFinder, class_name, provenance
from model_core.analysis.sidecar import Output
from model_core.images import encode_png
from model_core.sampling.loop import StepCallback, Trajectory


def frame_steps(num_steps: int, frames: int) -> list[int]:
    """Sampling steps (0 = the noisiest) at which frames are taken: uniformly spaced, the last step always."""
    if num_steps < 1 or frames < 1:
        raise ValueError(f"need at least one step and one frame, got {num_steps} steps and {frames} frames")
    if frames == 1:
        return [num_steps - 1]
    return sorted({int(round(v)) for v in np.linspace(0, num_steps - 1, min(frames, num_steps))})


def sample_with_frames(pipe, trajectories: list[Trajectory], steps: str, sampler: str, at_steps: list[int],
                       callback: StepCallback | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Sample like ``Pipeline.sample_trajectories`` and keep the frame at each step of ``at_steps``.

    Returns (x_0 (N, C, H, W), {step: frame (N, C, H, W)}), on the CPU. The
    batch is split into the pipeline's chunks here, so each chunk's frames
    are recorded against its own rows; ``callback`` sees one running count.
    """
    wanted = set(at_steps)
    size = pipe.max_batch
    chunks = [trajectories[i:i + size] for i in range(0, len(trajectories), size)]
    outs: list[torch.Tensor] = []
    frames: dict[int, list[torch.Tensor]] = {s: [] for s in sorted(wanted)}
    for c, chunk in enumerate(chunks):
        def record(step, total, x, pred_x0, _c=c):
            if step in wanted:
                # The last step's frame is the sample itself (see the module's docstring).
                frames[step].append((x if step == total - 1 else pred_x0).detach().cpu().clone())
            if callback is not None:
                callback(_c * total + step, len(chunks) * total, x, pred_x0)

        outs.append(pipe.sample_trajectories(chunk, steps, sampler, callback=record).cpu())
    return torch.cat(outs), {s: torch.cat(v) for s, v in frames.items()}


def run(settings: dict, *, find_upload: UploadFinder | None = None, device: str | None = None,
        progress: Progress | None = None) -> Output:
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset

    preset = get_preset(settings["preset"])
    pipe = get_pipeline(preset.name, device)
    arms, labels, seeds = settings["arms"], settings["labels"], settings["seeds"]
    trs = [Trajectory(int(y), int(seed), arm["method"], float(arm["scale"]))
           for y, seed in zip(labels, seeds) for arm in arms]
    at = frame_steps(settings["num_steps"], settings["frames"])
    diffusion = pipe.diffusion(settings["steps"])
    S = diffusion.num_timesteps
    timesteps = [int(diffusion.timestep_map[S - 1 - s]) for s in at]

    def cb(step, total, x, x0):
        if progress is not None:
            progress(step + 1, total)

    x0, frames = sample_with_frames(pipe, trs, settings["steps"], settings["sampler"], at, cb)
    rows, row_labels = [], []
    for r, tr in enumerate(trs):
        rows.append([render.signed_to_uint8(frames[s][r].numpy()) for s in at])
        arm = arms[r % len(arms)]
        row_labels.append(f"{arm['name']}\n{tr.label} ({class_name(preset, tr.label)})\nseed {tr.seed}")
    headers = [f"step {s + 1}/{S}\nt = {t}" for s, t in zip(at, timesteps)]
    headers[-1] = f"final\n(step {S})"
    g = render.Grid(rows, title=f"Predicted x_0 along each run; preset {preset.name}, {settings['steps']} steps "
                                f"({settings['sampler']})",
                    col_headers=headers, row_labels=row_labels,
                    notes=["Each label's rows share the seed (the same x_T and noise); the last column is the "
                           "sample itself."])
    files = {"trajectory.png": encode_png(render.render(g))}
    final = [render.signed_to_uint8(x.numpy()) for x in x0]
    from model_core.files import sha256_bytes

    summary = {"frame_steps": at, "frame_timesteps": timesteps,
               "samples": [{"label": tr.label, "seed": tr.seed, "arm": arms[r % len(arms)]["name"],
                            "final_sha256": sha256_bytes(final[r].tobytes())} for r, tr in enumerate(trs)]}
    return Output("trajectory", settings, files, summary, provenance(pipe))
