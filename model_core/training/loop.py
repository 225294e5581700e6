"""What every training loop here shares: schedule, EMA, RNG, checkpoints, time limits.

A run lives in one directory:

* ``state.pt``: everything needed to continue exactly (model, optimizer, EMA,
  step, every RNG state), written atomically;
* ``run.json``: the config, data fingerprint, seed and code version, written
  at the start and refreshed at every checkpoint (with wall time so far);
* ``metrics.jsonl``: one JSON line per training step;
* the exported weights (``model.pt``, ``ema.pt``) in the format of
  ``model_core.checkpoints`` that presets load.

Randomness that defines *what* is trained on (the batch, the timesteps, the
noise, the augmentation) comes from generators seeded by (seed, step,
stream), so it does not depend on anything that happened before the step. The
global RNGs (which dropout uses) are saved and restored. Together, a run
stopped at step N and resumed reproduces the uninterrupted run.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_core.errors import InputError, SettingError
from model_core.files import atomic_write, atomic_write_text

STATE_FILE = "state.pt"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


# Settings added after runs had been made, with the value every earlier run had. A config records one only when
# it differs, so runs and exported weights from before it still resume and compare equal.
LATER_SETTINGS = {"t_power": 1.0, "ema_warmup": False, "keep_every": 0}


def config_record(config: dict) -> dict:
    """``config`` without the later settings that are at their earlier value."""
    return {k: v for k, v in config.items() if not (k in LATER_SETTINGS and v == LATER_SETTINGS[k])}


class RunConfigMismatch(SettingError):
    """The run directory (setting ``out``) holds a checkpoint of a different configuration."""


# -- schedules and randomness -----------------------------------------------------
def linear_lr(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear annealing from ``start`` at step 0 to ``end`` at the last step."""
    if total_steps <= 1:
        return float(start)
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return float(start + (end - start) * frac)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


STREAMS = {"data": 0, "timesteps": 1, "noise": 2, "augment": 3}


def step_generator(seed: int, step: int, stream: str) -> torch.Generator:
    """A CPU generator for one purpose at one step, independent of everything before it."""
    state = np.random.SeedSequence([int(seed), int(step), STREAMS[stream]]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global generator's state as tensors and plain numbers, so a state file loads with
    ``weights_only=True`` (Python's and numpy's own state objects would need unpickling)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": int(version), "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(w) for w in py["words"].tolist()), py["gauss"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _diagnosis(message: str) -> str:
    """torch's reason without its advice to load with weights_only=False (which would run the file's code)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    keep = [line for line in lines if "weights_only" not in line and not line.startswith("Check the documentation")]
    return " ".join(" ".join(keep or lines[-1:]).split())


class TrainingStateError(InputError):
    """A run directory's state file cannot be resumed from: unreadable, or not tensors and plain data."""


def load_training_state(path: Path) -> dict[str, Any]:
    """A training state, read with ``weights_only=True``: it never runs code from the file.

    A state holds tensors, numbers, strings and containers of them (the RNG
    states as tensors). A file that needs anything else, a crafted pickle
    included, is refused, as is a corrupt or truncated one.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as err:
        text = _diagnosis(str(err))
        if "unsupported global" in str(err).lower():
            raise TrainingStateError(
                f"{path} holds Python objects besides tensors and plain data, so it is not loaded (loading it "
                "could run code from the file). A state written by this version never does; if you trust the "
                f"file (e.g. an older version wrote it), delete it to start the run over") from None
        raise TrainingStateError(f"{path} cannot be read as a training state (truncated or not a checkpoint?): "
                                 f"{text[:200]}; delete it to start the run over") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "rng", "config"} <= set(state):
        raise TrainingStateError(f"{path} is not a training state of this project (missing model, optimizer, step, "
                                 "rng or config); delete it to start the run over")
    return state


# -- EMA --------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        """The decay of the update after ``step`` optimiser steps.

        Without warm-up a short run's average keeps decay**steps of the random
        initial weights (0.2 after 1,600 steps at 0.999); the warm-up
        min(decay, (1 + n) / (10 + n)) forgets them within the first steps.
        """
        return min(self.decay, (1.0 + step) / (10.0 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int = 0) -> None:
        decay = self.decay_at(step)
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise RunConfigMismatch("out", f"EMA state does not match the model (keys differ: {sorted(missing)[:5]})")
        for k, v in state.items():
            self.shadow[k].copy_(v)


# -- time limits ------------------------------------------------------------------
class Deadline:
    """``max_minutes``: stop cleanly (with a checkpoint) once the budget is spent."""

    def __init__(self, max_minutes: float | None):
        self.max_seconds = None if max_minutes is None else float(max_minutes) * 60.0
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return self.max_seconds is not None and self.elapsed() >= self.max_seconds


# -- run directories --------------------------------------------------------------
def atomic_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def run_info(kind: str, config: dict, data: dict, seed: int) -> dict:
    from model_core.provenance import environment

    return {"kind": kind, "config": config, "data": data, "seed": seed, **environment()}


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<unset>"), b.get(k, "<unset>")
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs.extend(config_differences(va, vb, f"{prefix}{k}."))
        elif va != vb:
            diffs.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return diffs


@dataclass
class RunDir:
    path: Path

    def __post_init__(self):
        self.path = Path(self.path)

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    def has_state(self) -> bool:
        return self.state_path.is_file()

    def start(self, info: dict, resumable_keys: tuple[str, ...] = ("total_steps", "ckpt_every", "keep_every")) -> dict | None:
        """Create the directory or check that its checkpoint belongs to this config.

        Returns the saved state to resume from, or None for a fresh run. Keys
        in ``resumable_keys`` may change between sessions (e.g. extending a run).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        state = None
        if self.has_state():
            state = load_training_state(self.state_path)
            old = {k: v for k, v in state["config"].items() if k not in resumable_keys}
            new = {k: v for k, v in info["config"].items() if k not in resumable_keys}
            diffs = config_differences(old, new)
            if state.get("data_fingerprint") != info["data"]["fingerprint"]:
                diffs.append("data fingerprint changed")
            if diffs:
                raise RunConfigMismatch(
                    "out", f"{self.path} holds a checkpoint of a different run ({'; '.join(diffs[:6])}); "
                    f"use another run directory ({{out}}), or delete {self.state_path} to start over")
            info = {**info, "wall_seconds": state.get("wall_seconds", 0.0), "resumed_at_steps":
                    state.get("resumed_at_steps", []) + [state["step"]]}
        atomic_json(self.path / RUN_FILE, info)
        return state

    def save_state(self, state: dict) -> None:
        atomic_write(self.state_path, lambda p: torch.save(state, p))

    def update_info(self, **fields) -> None:
        path = self.path / RUN_FILE
        info = json.loads(path.read_text()) if path.is_file() else {}
        info.update(fields)
        atomic_json(path, info)

    def log(self, record: dict) -> None:
        with open(self.path / METRICS_FILE, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate_log(self, step: int) -> None:
        """Drop log lines past ``step`` (written after the last checkpoint by a killed run)."""
        path = self.path / METRICS_FILE
        if not path.is_file():
            return
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) < step]
        atomic_write_text(path, "".join(line + "\n" for line in keep))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- the loop ---------------------------------------------------------------------
@dataclass
class LoopResult:
    step: int
    total_steps: int
    finished: bool
    wall_seconds: float
    last: dict


def run_loop(*, run: RunDir, info: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             ema: EMA | None, total_steps: int, step_fn, lr_fn, export_fn, ckpt_every: int = 500,
             max_minutes: float | None = None, progress: bool = True, desc: str = "train",
             postfix_fn=None, stop_at: int | None = None, dist=None, keep_every: int = 0) -> LoopResult:
    """Run (or resume) ``step_fn(step) -> metrics dict`` up to ``total_steps``.

    Resumes from ``run``'s checkpoint when it holds one of the same config.
    Checkpoints every ``ckpt_every`` steps, when ``max_minutes`` runs out and
    at the end; ``export_fn(run_path)`` writes loadable weights at each
    checkpoint. ``postfix_fn(recent_records) -> dict`` fills the progress bar.
    ``stop_at`` ends this session after that global step as if time had run
    out (a checkpoint, then return), e.g. to train in fixed chunks.
    ``keep_every``: also copy the exported weights of every checkpoint at a
    multiple of it to ``snapshots/step-NNNNNN/``, so that a checkpoint can be
    chosen afterwards on held-out data (robust training overfits: the last
    weights are not always the best).
    """
    from tqdm import tqdm

    from model_core.training.distributed import DistContext

    dist = dist or DistContext()
    seed = int(info["seed"])
    if dist.main:
        state = run.start(info)
    dist.barrier()  # rank 0 has checked the directory's config before the others read its state
    if not dist.main:
        state = load_training_state(run.state_path) if run.has_state() else None
    if state is None:
        step = 0
        wall_before = 0.0
        resumed = []
        if dist.main:
            run.truncate_log(0)
        if dist.rank > 0:
            # Another dropout stream per rank (the weights were initialised alike before this).
            seed_everything(seed + 1_000_003 * dist.rank)
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        ranks = state.get("rng_ranks") or []
        set_rng_state(ranks[dist.rank] if dist.rank < len(ranks) else state["rng"])
        step = int(state["step"])
        wall_before = float(state.get("wall_seconds", 0.0))
        resumed = list(state.get("resumed_at_steps", [])) + [step]
        if dist.main:
            run.truncate_log(step)
    deadline = Deadline(max_minutes)

    def checkpoint(at_step: int) -> None:
        rngs = dist.gather(rng_state())  # every rank takes part; rank 0 writes
        if not dist.main:
            return
        extra = {"rng_ranks": rngs, "world_size": dist.world} if dist.active else {}
        run.save_state({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "step": at_step, "rng": rngs[0],
            "config": info["config"], "data_fingerprint": info["data"]["fingerprint"], "seed": seed,
            "wall_seconds": wall_before + deadline.elapsed(), "resumed_at_steps": resumed, **extra,
        })
        export_fn(run.path)
        if keep_every and at_step % keep_every == 0:
            keep_snapshot(run.path, at_step)
        run.update_info(step=at_step, total_steps=total_steps, wall_seconds=round(wall_before + deadline.elapsed(), 1),
                        resumed_at_steps=resumed, finished=at_step >= total_steps,
                        **({"world_size": dist.world} if dist.active else {}))

    recent: list[dict] = []
    last: dict = {}
    bar = tqdm(total=total_steps, initial=step, desc=desc, unit="step", disable=not (progress and dist.main),
               dynamic_ncols=True)
    try:
        while step < total_steps:
            lr = lr_fn(step)
            set_lr(optimizer, lr)
            model.train()
            metrics = step_fn(step)
            if ema is not None:
                ema.update(model, step)
            last = {"step": step, "lr": lr, **metrics}
            if dist.main:
                run.log(last)
            recent = (recent + [last])[-50:]
            step += 1
            bar.update(1)
            if postfix_fn is not None:
                bar.set_postfix(postfix_fn(recent), refresh=False)
            # Ranks must agree on when to stop, or one would wait forever for the others' gradients.
            expired = dist.any(deadline.expired()) if max_minutes is not None else False
            stop = expired or (stop_at is not None and step >= stop_at)
            if step % ckpt_every == 0 or step == total_steps or stop:
                checkpoint(step)
                if stop and step < total_steps:
                    if dist.main:
                        bar.write(f"stopping at step {step}/{total_steps} (time or step limit); checkpoint saved in "
                                  f"{run.path}; run the same command again to resume")
                    break
        else:
            if state is not None and int(state["step"]) >= total_steps and dist.main:
                export_fn(run.path)  # nothing left to train; make sure the weights exist
    finally:
        bar.close()
    dist.barrier()  # the weights are written before any rank returns
    return LoopResult(step, total_steps, step >= total_steps, wall_before + deadline.elapsed(), last)


SNAPSHOT_DIR = "snapshots"


def keep_snapshot(run_path: Path, step: int) -> Path:
    """Copy the exported weights (``model.pt``, ``ema.pt`` and their sidecars) to ``snapshots/step-NNNNNN``."""
    import shutil

    dest = Path(run_path) / SNAPSHOT_DIR / f"step-{step:06d}"
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(run_path).iterdir()):
        if f.is_file() and f.name.split(".")[0] in ("model", "ema") and ".pt" in f.name:
            atomic_write(dest / f.name, lambda p, src=f: shutil.copyfile(src, p))
    return dest


def mean_of(records: list[dict], key: str) -> float | None:
    vals = [r[key] for r in records if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def export_run_weights(run_dir: str | os.PathLike, out: str | os.PathLike, which: str = "auto",
                       dtype: str = "float16") -> dict:
    """Copy a run's weights into a file a preset can load, e.g. half precision for shipping.

    ``which``: "ema", "model" or "auto" (EMA when the run kept one: those are
    the weights to sample with). Writes ``out`` (a plain state dict) and
    ``out.json`` (the run's config, data fingerprint, seed, versions, steps,
    wall time, and the sha256 of the source and of the written file).
    """
    from model_core.provenance import file_sha256

    run_dir, out = Path(run_dir), Path(out)
    info_path = run_dir / RUN_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {RUN_FILE})")
    if which == "auto":
        which = "ema" if (run_dir / "ema.pt").is_file() else "model"
    if which not in ("ema", "model"):
        raise ValueError(f"which must be 'ema', 'model' or 'auto', got {which!r}")
    src = run_dir / f"{which}.pt"
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist (has the run reached its first checkpoint?)")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    cast = getattr(torch, dtype)
    state = torch.load(src, map_location="cpu", weights_only=True)
    state = {k: (v.to(cast) if v.dtype.is_floating_point else v).contiguous() for k, v in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: torch.save(state, p))
    info = json.loads(info_path.read_text())
    meta = {"source": str(src), "source_sha256": file_sha256(src), "weights": which, "dtype": dtype,
            "sha256": file_sha256(out), "run": info}
    atomic_json(out.with_suffix(out.suffix + ".json"), meta)
    return meta


def save_weights_from_state(state: dict, model: torch.nn.Module, path: Path, metadata: dict) -> None:
    """Export a state dict (e.g. EMA weights) through ``checkpoints.save_weights`` via a copy of the model."""
    import copy

    from model_core.checkpoints import save_weights

    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    save_weights(clone, path, metadata=metadata)
