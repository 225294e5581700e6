"""Job rows -> API resources."""
from __future__ import annotations

from model_core.presets import PAIR, UnknownPresetError, get_preset
from worker.models import Job

API = "/v1"


def image_url(image_id: str) -> str:
    return f"{API}/images/{image_id}.png"


def job_url(job_id: str) -> str:
    return f"{API}/generations/{job_id}"


def _class_names(preset_name: str, labels: list[int]) -> list[str]:
    try:
        names = get_preset(preset_name).class_names
    except UnknownPresetError:  # a preset removed since the job ran
        return [str(label) for label in labels]
    return [names[label] if 0 <= label < len(names) else str(label) for label in labels]


def generation(job: Job) -> dict:
    by_slot = {(im.position, im.method): im for im in job.images}
    previews: dict[tuple[int, str], list] = {}
    for p in job.preview_images:
        previews.setdefault((p.position, p.method), []).append(p)
    pair = job.guidance == PAIR
    images = []
    for im in sorted(job.images, key=lambda im: (im.position, im.method)):
        link = None
        if pair:
            other_method = "vanilla" if im.method == "robust" else "robust"
            other = by_slot.get((im.position, other_method))
            if other is not None:
                link = {"pair_index": im.position, "partner_id": other.id, "partner_method": other_method}
        images.append({"id": im.id, "url": image_url(im.id), "index": im.position, "label": im.label,
                       "class_name": im.class_name, "seed": im.seed, "method": im.method, "scale": im.scale,
                       "steps": im.steps, "sampler": im.sampler, "width": im.width, "height": im.height,
                       "sha256": im.sha256, "pair": link,
                       "previews": [{"frame": p.frame, "step": p.step, "timestep": p.timestep, "url": image_url(p.id)}
                                    for p in previews.get((im.position, im.method), [])]})
    pairs = []
    if pair:
        for position in sorted({im.position for im in job.images}):
            robust, vanilla = by_slot.get((position, "robust")), by_slot.get((position, "vanilla"))
            if robust is not None and vanilla is not None:
                pairs.append({"index": position, "label": robust.label, "class_name": robust.class_name,
                              "seed": robust.seed, "robust": robust.id, "vanilla": vanilla.id})
    step, progress = _progress(job)
    url = job_url(job.id)
    return {
        "id": job.id, "status": job.status, "preset": job.preset, "guidance": job.guidance,
        "class_labels": list(job.labels), "class_names": _class_names(job.preset, list(job.labels)),
        "seeds": list(job.seeds), "scale": dict(job.scales), "steps": job.steps, "sampler": job.sampler,
        "num_images": job.num_images, "progress": progress, "progress_step": step,
        "progress_total": job.progress_total, "cancel_requested": job.cancel_requested, "error": job.error,
        "attempts": job.attempts, "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "images": images, "pairs": pairs,
        "links": {"self": url, "events": f"{url}/events", "cancel": f"{url}/cancel"},
    }


def _progress(job) -> tuple[int, float]:
    """(steps done, fraction done) as the API shows them: a succeeded job is complete."""
    step = job.progress_total if job.status == "succeeded" else min(job.progress_step, job.progress_total)
    return step, round(step / max(job.progress_total, 1), 4)


def progress_snapshot(job: Job) -> dict:
    """The fields of ``generation(job)`` that a progress event carries; reads no image rows, so the
    event stream loads the job row alone for it."""
    step, progress = _progress(job)
    return {"id": job.id, "status": job.status, "progress": progress, "progress_step": step,
            "progress_total": job.progress_total, "cancel_requested": job.cancel_requested, "error": job.error}
