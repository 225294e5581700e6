"""Every kind of job the workers run, listed once: its table, its Celery task and its runner.

A message carries only a row id; the task named here looks the row up in the
kind's table and hands it to the kind's runner. The Celery routes, the
worker's task functions and the reaper's tables are all built from ``KINDS``,
so a new job kind is one entry here (plus its table, its runner and its API).
Tables and runners are named as ``module:attribute`` and imported when first
used: the runners import torch, which the API process never needs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobKind:
    key: str      # a short name for logs and docs
    task: str     # the Celery task name
    table: str    # "module:Class" of the SQLAlchemy model holding its rows
    runner: str   # "module:function"; function(settings, row_id) -> str runs one row
    summary: str  # what one job does (the task's docstring)

    def model(self) -> type:
        return _load(self.table)

    def run(self, settings, row_id: str) -> Any:
        return _load(self.runner)(settings, row_id)


def _load(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


KINDS: tuple[JobKind, ...] = (
    JobKind("generation", "rguide.generate", "worker.models:Job", "worker.runner:run_job",
            "Run generation job ``job_id``; the job row holds everything else."),
    JobKind("analysis", "rguide.analyze", "worker.analysis_models:AnalysisJob",
            "worker.analysis_runner:run_analysis_job",
            "Run analysis job ``job_id`` (gradient maps, class maximisation, ...); the row holds its settings."),
    JobKind("evaluation_shard", "rguide.evaluate_shard", "worker.evaluation_models:EvaluationShard",
            "worker.evaluation_runner:run_shard_job",
            "Run evaluation shard ``job_id`` (its images, their features; the row's merge when it is the last)."),
    JobKind("classification", "rguide.classify", "worker.classification_models:ClassificationJob",
            "worker.classification_runner:run_classification_job",
            "Run classification job ``job_id`` (diffusion classifier or a classifier at t = 0)."),
    JobKind("machine_votes", "rguide.machine_votes", "worker.survey_models:MachineVoteJob",
            "worker.machine_vote_runner:run_machine_vote_job",
            "Run machine-vote job ``job_id``: the machine judge answers a study's pairs (docs/pilot.md)."),
    JobKind("robustness_report", "rguide.robustness_report", "worker.robustness_models:RobustnessJob",
            "worker.robustness_runner:run_robustness_job",
            "Run robustness-report job ``job_id`` (a preset's defences under attack); the row holds its settings."),
)
BY_KEY = {kind.key: kind for kind in KINDS}
