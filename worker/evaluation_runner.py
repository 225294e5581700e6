"""Runs one evaluation shard: claim, sample its images with the plan's seeds, store them with their features,
complete, and merge the shard's row (and the evaluation) when it was the last one missing.

A shard is idempotent: its images are fixed by the evaluation's plan (the
seeds of images ``start..stop-1`` of its row), its file's name by its place
in the plan, and a rerun (the reaper re-sent it after its worker died, or a
duplicate message) that finds the finished file reuses it instead of
sampling again. A finished shard is never claimed again (``worker.jobs.claim``
takes queued shards only), so resuming an evaluation samples only what is
missing.

Merging reads the row's shard files in image order and computes the row's
metrics with ``model_core.evaluation.shards.row_result``, as ``rguide
evaluate`` does in one process; the real-image reference is the stored one
(``MEDIA_DIR/reference``, computed by the first worker that needs it).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from worker import evaluation_jobs, jobs
from worker.config import Settings
from worker.db import session_factory
from worker.evaluation_models import Evaluation, EvaluationShard
from worker.runner import _LeaseKeeper, new_owner

log = logging.getLogger("rguide.worker")

_extractors: dict = {}
_references: dict = {}


class Canceled(Exception):
    pass


def shard_file(evaluation_id: str, row: int, start: int, stop: int) -> str:
    """The shard's file, relative to the media folder: named by its place in the plan alone."""
    return f"evaluations/{evaluation_id}/row{row:03d}_{start:07d}-{stop:07d}.npz"


def reference_dir(settings: Settings) -> Path:
    return settings.media_dir / "reference"


def _extractor(kind: str, weights: str | None):
    from model_core.evaluation.metrics import load_extractor

    key = (kind, weights)
    if key not in _extractors:
        _extractors[key] = load_extractor(kind, weights)
    return _extractors[key]


def _reference(settings: Settings, p):
    """The stored real-image reference, kept in this process: a merge per row must not reread 400 MB each time."""
    from model_core.evaluation import shards as sh

    key = (p.feature_kind, p.feature_weights, p.real_data, p.real_split, str(reference_dir(settings)))
    if key not in _references:
        _references.clear()  # one at a time: they can be large
        _references[key] = sh.real_reference(p, _extractor(p.feature_kind, p.feature_weights),
                                             reference_dir(settings))
    return _references[key]


def run_shard_job(settings: Settings, shard_id: str) -> str:
    Session = session_factory(settings.database_url)
    owner = new_owner()
    with Session() as s:
        shard = jobs.claim(s, shard_id, owner, settings.lease_seconds, settings.max_attempts, model=EvaluationShard)
        if shard is None:
            held = s.get(EvaluationShard, shard_id)
            pending = held is not None and held.status == "succeeded" and evaluation_jobs.get(
                s, held.evaluation_id).result is None
            where = (held.evaluation_id, held.row_index) if pending else None
    if shard is None:
        if where is not None:  # a finished shard sent again by a resume: its row may still need merging
            merge(settings, *where)
            return "merged"
        log.info("evaluation shard %s: nothing to do", shard_id)
        return "skipped"
    with Session() as s:
        ev = s.get(Evaluation, shard.evaluation_id)
        eval_id, row_index, start, stop = ev.id, shard.row_index, shard.start, shard.stop
        esettings, canceled = dict(ev.settings), ev.cancel_requested
    if canceled:
        with Session() as s:
            jobs.finish_canceled(s, [shard_id], owner, EvaluationShard)
        return "canceled"
    keeper = _LeaseKeeper(Session, [shard_id], owner, settings, EvaluationShard)
    keeper.start()
    try:
        _run(settings, Session, shard_id, eval_id, esettings, row_index, start, stop, owner)
    except Canceled:
        with Session() as s:
            jobs.finish_canceled(s, [shard_id], owner, EvaluationShard)
        return "canceled"
    except Exception as exc:
        log.exception("evaluation shard %s failed", shard_id)
        from model_core.errors import message

        with Session() as s:
            jobs.finish_failed(s, [shard_id], owner, f"{type(exc).__name__}: {message(exc)}", EvaluationShard)
        return "failed"
    finally:
        keeper.stop()
    try:
        merge(settings, eval_id, row_index)
    except Exception:  # the shard is done; the next shard's worker (or a resume) merges again
        log.exception("evaluation %s: merging row %d failed", eval_id, row_index)
    return "succeeded"


def _run(settings: Settings, Session, shard_id: str, eval_id: str, esettings: dict, row_index: int, start: int,
         stop: int, owner: str) -> None:
    import numpy as np

    from model_core.evaluation.plan import plan, settings_from_dict
    from model_core.evaluation.shards import ShardOutput, compute_shard
    from model_core.files import atomic_write
    from model_core.pipeline import get_pipeline

    p = plan(settings_from_dict(esettings))
    row = p.rows[row_index]
    rel = shard_file(eval_id, row_index, start, stop)
    path = settings.media_dir / rel
    t0 = time.monotonic()
    if path.is_file():
        with np.load(path) as stored:
            out = ShardOutput.from_arrays(stored)
        log.info("evaluation %s row %d [%d, %d): reusing %s", eval_id, row_index, start, stop, rel)
    else:
        size, state = stop - start, {"last": float("-inf")}
        total = size * row.num_steps

        def progress(done: int, steps: int) -> None:
            now = time.monotonic()
            if done < steps and now - state["last"] < settings.progress_interval_seconds:
                return
            state["last"] = now
            with Session() as s:
                if jobs.record_progress(s, [shard_id], owner, int(total * done / max(steps, 1)), total,
                                        EvaluationShard):
                    raise Canceled()

        progress(0, 1)
        pipe = get_pipeline(p.preset)
        out = compute_shard(p, row, start, stop, pipe, _extractor(p.feature_kind, p.feature_weights), progress)
        arrays = out.arrays()
        atomic_write(path, lambda q: np.savez(q, **arrays), suffix=".tmp.npz")
        with Session() as s:
            evaluation_jobs.count_computed(s, shard_id)
    with Session() as s:
        done = evaluation_jobs.complete_shard(s, shard_id, rel, out.seconds, owner)
    log.info("evaluation %s row %d [%d, %d): %s in %.1f s", eval_id, row_index, start, stop,
             "done" if done else "not stored (canceled or finished)", time.monotonic() - t0)
    if not done:
        raise Canceled()


def merge(settings: Settings, eval_id: str, row_index: int) -> bool:
    """Merge ``row_index`` if all its shards are in, then the evaluation if all rows are; True when finished."""
    import numpy as np

    from model_core.evaluation import shards as sh
    from model_core.evaluation.plan import plan, settings_from_dict

    Session = session_factory(settings.database_url)
    with Session() as s:
        ev = evaluation_jobs.get(s, eval_id)
        if ev is None or ev.result is not None:
            return False
        p = plan(settings_from_dict(dict(ev.settings)))
        done_rows = dict(ev.rows or {})
        row_shards = evaluation_jobs.row_shards_if_done(s, eval_id, row_index)
        files = [(sd.file, sd.seconds) for sd in row_shards] if row_shards else None
    if (files is None or str(row_index) in done_rows) and len(done_rows) < len(p.rows):
        return False  # nothing to merge yet: do not read the (possibly large) reference
    ref = _reference(settings, p)
    if files is not None and str(row_index) not in done_rows:
        feats, preds, seconds = [], [], 0.0
        for rel, secs in files:
            with np.load(settings.media_dir / rel) as stored:
                feats.append(stored["features"])
                if "predictions" in stored.files:
                    preds.append(stored["predictions"])
            seconds += float(secs or 0.0)
        row = p.rows[row_index]
        result = sh.row_result(p, row, np.concatenate(feats), np.concatenate(preds) if preds else None,
                               ref.features, seconds / p.n, samples=f"row{row_index:03d}")
        with Session() as s:
            done_rows = evaluation_jobs.store_row(s, eval_id, row_index, result)
        log.info("evaluation %s: row %d merged (FID %.4f)", eval_id, row_index, result["fid"])
    if len(done_rows) < len(p.rows):
        return False
    return _finish(settings, Session, p, eval_id, done_rows, ref)


def _finish(settings: Settings, Session, p, eval_id: str, done_rows: dict, ref) -> bool:
    import torch

    from model_core.evaluation import shards as sh
    from model_core.evaluation.quality import build_report, markdown_table
    from model_core.pipeline import get_pipeline

    results = {int(k): v for k, v in done_rows.items()}
    with Session() as s:
        workers = sorted({sd.worker.rsplit(":", 1)[0] for sd in evaluation_jobs.shards_of(s, eval_id) if sd.worker})
    pipe = get_pipeline(p.preset)
    report = build_report(p, sh.merge_rows(p, results), ref, {
        "threads": torch.get_num_threads(), "device": pipe.device, "workers": workers,
        "note": "seconds per image: the shards' sampling wall time summed over the row, divided by its images "
                "(the time one worker would take; workers ran shards in parallel)"},
        pipe.provenance(), command="POST /v1/evaluations")
    report["markdown"] = markdown_table(report)
    with Session() as s:
        finished = evaluation_jobs.finish(s, eval_id, report)
    if finished:
        log.info("evaluation %s: finished", eval_id)
    return finished
