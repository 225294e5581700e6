"""Runs one generation task: claim, sample (in a batch with waiting look-alikes), store.

This is the only code in the service that runs models. It is called by the
Celery task with a job id; everything else comes from the job row.

Batching: when the claimed job starts, other *queued* jobs with the same
preset, steps and sampler are claimed too (up to ``batch_max_images``
images) and all their trajectories go through one sampling loop. Every image
depends only on its own (label, seed, method, scale), never on the batch, so
this changes speed, not results. One UNet pass over B images costs much less
than B passes of one, on a CPU as on a GPU (``benchmarks/service.py``).

Idempotency: PNG files are content-addressed and image rows have
deterministic ids and a unique (job, position, method); a second run of the
same job writes the same file and inserts nothing.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from worker import jobs, notify
from worker.config import Settings
from worker.db import session_factory
from worker.media import store_png
from worker.models import Job

log = logging.getLogger("rguide.worker")


class _LeaseKeeper(threading.Thread):
    """Renews the lease of the jobs being run, so the reaper knows this worker is alive.

    A thread rather than the sampling callback: loading a preset or encoding
    PNGs calls no callback, and must not look like a dead worker.
    """

    def __init__(self, Session, job_ids: list[str], owner: str, settings: Settings, model: type = Job):
        super().__init__(name="rguide-lease", daemon=True)
        self.Session, self.job_ids, self.owner, self.settings = Session, job_ids, owner, settings
        self.model = model
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.heartbeat_seconds):
            try:
                with self.Session() as s:
                    jobs.renew_lease(s, self.job_ids, self.owner, self.settings.lease_seconds, self.model)
            except Exception:
                log.exception("could not renew the lease of %s", ", ".join(self.job_ids))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class _ProgressWriter(threading.Thread):
    """Writes the batch's progress to its job rows every ``progress_interval_seconds``, and reads
    their cancel flags, from its own thread.

    The sampling callback only leaves the latest (step, total) in ``latest`` and checks
    ``canceled``: the write (a few database round trips) and its notification never hold up
    a sampling step. A cancel is therefore seen at the first step after the write that read
    it, at most one interval later than on the sampling thread. A failed write is logged and
    retried at the next interval; the job's outcome is decided by ``complete`` at the end.
    """

    def __init__(self, settings: Settings, Session, job_ids: list[str], owner: str):
        super().__init__(name="rguide-progress", daemon=True)
        self.settings, self.Session, self.job_ids, self.owner = settings, Session, job_ids, owner
        self.latest: tuple[int, int] | None = None  # set by the sampling thread
        self.canceled: set[str] = set()  # grown here, read by the sampling thread
        self._written: tuple[int, int] | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        failing = False
        while not self._stop_event.wait(self.settings.progress_interval_seconds):
            try:
                self.write()
                failing = False
            except Exception:
                if not failing:  # once per outage, not four times a second
                    log.exception("could not write the progress of %s", ", ".join(self.job_ids))
                failing = True

    def write(self) -> None:
        latest = self.latest
        active = [i for i in self.job_ids if i not in self.canceled]
        if latest is None or latest == self._written or not active:
            return
        step, total = latest
        with self.Session() as s:
            requested = jobs.record_progress(s, active, self.owner, step, total) - self.canceled
            if requested:
                # Stop showing them as running now, even if their batch mates go on.
                jobs.finish_canceled(s, sorted(requested), self.owner)
        self._written = latest
        notify.job_changed(self.settings, active)
        if requested:
            log.info("job(s) %s canceled at step %d/%d", ", ".join(sorted(requested)), step, total)
            self.canceled = self.canceled | requested  # a new set: the sampling thread never sees one half-updated

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def new_owner() -> str:
    """Names one attempt: host, process and a nonce (a retried job gets a new owner)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _gather_burst(session, batch: list[Job], owner: str, settings: Settings) -> list[Job]:
    """More companions, once, when the first claim found some: the rest of a burst still reaching the database."""
    taken = sum(j.num_images for j in batch)
    if len(batch) < 2 or settings.batch_gather_seconds <= 0 or taken >= settings.batch_max_images:
        return []
    time.sleep(settings.batch_gather_seconds)
    # claim_companions counts the leader's images against the cap; the companions already taken count too.
    return jobs.claim_companions(session, batch[0], owner, settings.lease_seconds,
                                 settings.batch_max_images - (taken - batch[0].num_images))


def run_job(settings: Settings, job_id: str) -> str:
    """Run job ``job_id`` (and any batch companions). Returns an outcome word for logs."""
    Session = session_factory(settings.database_url)
    owner = new_owner()
    with Session() as s:
        leader = jobs.claim(s, job_id, owner, settings.lease_seconds, settings.max_attempts)
        if leader is None:
            notify.job_changed(settings, [job_id])  # claim may have failed it (too many attempts)
            job = jobs.get_job(s, job_id, with_images=False)
            log.info("job %s: nothing to do (%s)", job_id, "no such job" if job is None else
                     f"{job.status}{', held by ' + job.lease_owner if job.status == 'running' else ''}")
            return "skipped"
        batch = [leader] + jobs.claim_companions(s, leader, owner, settings.lease_seconds,
                                                 settings.batch_max_images)
        batch += _gather_burst(s, batch, owner, settings)
    ids = [j.id for j in batch]
    # Every committed change to a job row below is followed by a notification, so the
    # API's event streams show it now rather than at their next poll (worker.notify).
    notify.job_changed(settings, ids)
    keeper = _LeaseKeeper(Session, ids, owner, settings)
    keeper.start()
    try:
        return _run_batch(settings, Session, batch, owner)
    except Exception as exc:
        log.exception("jobs %s failed", ", ".join(ids))
        with Session() as s:
            jobs.finish_failed(s, ids, owner, f"{type(exc).__name__}: {exc}")
        notify.job_changed(settings, ids)
        return "failed"
    finally:
        keeper.stop()


def _run_batch(settings: Settings, Session, batch: list[Job], owner: str) -> str:
    # Imported here: the API imports this package's store modules and must not pull in torch.
    from model_core.analysis.trajectory import frame_steps, sample_with_frames
    from model_core.images import encode_png, to_uint8
    from model_core.pipeline import get_pipeline
    from model_core.presets import PAIR, get_preset
    from model_core.sampling.loop import SamplingCancelled, Trajectory

    leader = batch[0]
    ids = [j.id for j in batch]
    preset = get_preset(leader.preset)
    t0 = time.monotonic()
    pipe = get_pipeline(leader.preset)
    load_s = time.monotonic() - t0
    provenance = pipe.provenance()

    trajectories, slots = [], []
    for job in batch:
        for position, (label, seed) in enumerate(zip(job.labels, job.seeds)):
            for method in job.methods:
                scale = float(job.scales.get(method, 0.0))
                trajectories.append(Trajectory(int(label), int(seed), method, scale))
                slots.append((job, position, method, scale))
    log.info("sampling %d image(s) for job(s) %s: preset %s, steps %s (%s)%s", len(trajectories),
             ", ".join(ids), leader.preset, leader.steps, leader.sampler,
             f"; preset loaded in {load_s:.1f} s" if load_s > 0.5 else "")

    state = {"last_log": -1}
    writer = _ProgressWriter(settings, Session, ids, owner)

    def on_step(step: int, total: int, x_t, pred_x0) -> None:
        step += 1  # the core counts from 0 and calls after each step: steps done = step + 1
        decile = (10 * step) // max(total, 1)
        if decile != state["last_log"]:
            state["last_log"] = decile
            log.info("job(s) %s: step %d/%d", ", ".join(ids), step, total)
        writer.latest = (step, total)
        if writer.canceled.issuperset(ids):
            raise SamplingCancelled(f"canceled at step {step}/{total}")

    # Previews ("previews": N): the predicted x_0 at N uniformly spaced steps of each image's own trajectory,
    # recorded in the same run (model_core.analysis.trajectory), so they cost no extra sampling.
    preview_steps = {j.id: frame_steps(j.num_steps, j.previews) for j in batch if j.previews}
    writer.start()
    try:
        if preview_steps:
            wanted = sorted(set().union(*preview_steps.values()))
            x0, frames = sample_with_frames(pipe, trajectories, leader.steps, leader.sampler, wanted, on_step)
        else:
            x0, frames = pipe.sample_trajectories(trajectories, leader.steps, leader.sampler, callback=on_step), {}
    except SamplingCancelled:
        return "canceled"
    finally:
        writer.stop()  # the last step is written by complete(), with the images
    canceled = writer.canceled
    timestep_of = {}
    if preview_steps:
        diffusion = pipe.diffusion(leader.steps)
        S = diffusion.num_timesteps
        timestep_of = {s: int(diffusion.timestep_map[S - 1 - s]) for s in frames}

    arrays = to_uint8(x0)
    frame_arrays = {step: to_uint8(f) for step, f in frames.items()}
    rows: dict[str, list[dict]] = {j.id: [] for j in batch if j.id not in canceled}
    previews: dict[str, list[dict]] = {j.id: [] for j in batch if j.id not in canceled}
    for r, ((job, position, method, scale), array) in enumerate(zip(slots, arrays)):
        if job.id not in rows:
            continue
        label = int(job.labels[position])
        seed = int(job.seeds[position])
        recipe = {"preset": job.preset, "label": label, "class_name": preset.class_names[label], "seed": seed,
                  "method": method, "scale": scale, "steps": job.steps, "sampler": job.sampler,
                  "pair": job.guidance == PAIR}
        data = encode_png(array, {**recipe, "provenance": provenance})
        digest, rel = store_png(settings.media_dir, data)
        height, width = int(array.shape[0]), int(array.shape[1])
        channels = int(array.shape[2]) if array.ndim == 3 else 1
        rows[job.id].append(dict(
            id=jobs.image_id(job.id, position, method), job_id=job.id, position=position, method=method,
            label=label, class_name=preset.class_names[label], seed=seed, scale=scale, steps=job.steps,
            sampler=job.sampler, sha256=digest, path=rel, width=width, height=height, channels=channels,
            size_bytes=len(data), created_at=jobs.utcnow()))
        for frame, step in enumerate(preview_steps.get(job.id, [])):
            pic = frame_arrays[step][r]
            data = encode_png(pic, {**recipe, "preview": {"frame": frame, "step": step + 1,
                                                          "timestep": timestep_of[step],
                                                          "of": "predicted x_0; the last frame is the image"},
                                    "provenance": provenance})
            digest, rel = store_png(settings.media_dir, data)
            previews[job.id].append(dict(
                id=jobs.preview_id(job.id, position, method, frame), job_id=job.id, position=position,
                method=method, frame=frame, step=step + 1, timestep=timestep_of[step], sha256=digest, path=rel,
                width=int(pic.shape[1]), height=int(pic.shape[0]), created_at=jobs.utcnow()))
    outcomes = []
    for job_id, job_rows in rows.items():
        with Session() as s:
            done = jobs.complete(s, job_id, job_rows, previews[job_id])
        outcomes.append("succeeded" if done else "superseded")
        if not done:
            with Session() as s:
                current = jobs.get_job(s, job_id, with_images=False)
                if current is not None and current.status == "running" and current.cancel_requested:
                    jobs.finish_canceled(s, [job_id], owner)
        notify.job_changed(settings, [job_id])
    log.info("job(s) %s: %s in %.1f s", ", ".join(ids), ", ".join(outcomes) or "canceled",
             time.monotonic() - t0)
    return "succeeded" if "succeeded" in outcomes else (outcomes[0] if outcomes else "canceled")
