"""Run under ``torchrun``: the training runs tests/model_core/training/test_ddp.py compares with one process.

Usage: torchrun --nproc-per-node N ddp_runs.py OUT. Writes OUT/{vanilla,robust,diffusion} (full runs),
OUT/half (stopped at step 2, a checkpoint of N ranks), OUT/resumed (a copy of half run on to the end by
N ranks) and, when OUT/from_one exists (a one-process checkpoint), runs it on to the end on N ranks.
"""
import shutil
import sys
from pathlib import Path

import torch

from ddp_configs import STEPS, clf_cfg, data, diff_cfg
from model_core.training.classifier import train_classifier
from model_core.training.diffusion import train_diffusion
from model_core.training.distributed import context

torch.set_num_threads(1)
out = Path(sys.argv[1])
ds = data()
dist, _ = context()
from_one = (out / "from_one").is_dir()  # checked before any rank writes
dist.barrier()
train_classifier(clf_cfg(), out / "vanilla", dataset=ds, progress=False)
train_classifier(clf_cfg(robust=True), out / "robust", dataset=ds, progress=False)
train_diffusion(diff_cfg(), out / "diffusion", dataset=ds, progress=False)
train_classifier(clf_cfg(), out / "half", dataset=ds, progress=False, stop_at=STEPS // 2)
if dist.main:
    shutil.copytree(out / "half", out / "resumed")
dist.barrier()
train_classifier(clf_cfg(), out / "resumed", dataset=ds, progress=False)
if from_one:
    train_classifier(clf_cfg(), out / "from_one", dataset=ds, progress=False)
if (out / "cli.npz").is_file():  # the command line under torchrun: rank 0 alone reports
    from rguide.cli import main

    main(["train-classifier", "--data", str(out / "cli.npz"), "--value-range=-1-1", "--model-config",
          str(out / "cli.json"), "--steps", "2", "--batch-size", "6", "--ckpt-every", "100", "--out", str(out / "cli"),
          "--no-progress"])
