"""Data-parallel training under ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc-per-node N`` (and ``--nnodes``) sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; :func:`context` reads them, joins the process
group (gloo on CPU, nccl on CUDA) and pins each rank to its local GPU. With
no ``WORLD_SIZE`` (or 1) it is the one-process context and nothing changes.

The split keeps a run the run of one process whatever the number of ranks:

* every rank draws the *whole* global batch from the per-step seeded
  generators (data indices, augmentation, timesteps, noise) and keeps its
  contiguous part (:meth:`DistContext.part`), so the global batch does not
  depend on the number of ranks;
* each rank's loss is weighted by its share of the global batch, so DDP's
  gradient average is the gradient of the global-batch mean, and the learning
  rate schedule (a function of the global step) is untouched;
* rank 0 alone writes the state file, weights, run.json, metrics and the
  progress bar; the state holds every rank's global RNG (dropout), so a
  resume on the same number of ranks restores each rank's, and a resume on
  another number gives rank r the saved rank r's state when there is one.

Dropout masks come from each rank's global RNG, so with dropout > 0 two
ranks are a different (equally valid) draw than one process; without
dropout the parameters agree to float tolerance (the gradient sum is
reduced in another order).
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n``: sizes differ by at most one."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def loss_weight(self, n_local: int, n_global: int) -> float:
        """Factor on a rank's mean loss so that DDP's average of gradients is the global-batch mean's gradient."""
        return n_local * self.world / n_global

    def wrap(self, model: torch.nn.Module, device: str) -> torch.nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(device).index] if str(device).startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids)

    def gather(self, obj):
        """Every rank's ``obj`` (small: per-sample metrics), in rank order, on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (e.g. one rank's time limit ran out)."""
        if not self.active:
            return bool(flag)
        return any(self.gather(bool(flag)))

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def context(device: str = "cpu") -> tuple[DistContext, str]:
    """The process group ``torchrun`` asked for (joined once) and this rank's device.

    ``device`` "cuda" becomes ``cuda:LOCAL_RANK`` under torchrun; a CPU run
    uses gloo. Without torchrun: the one-process context and ``device``.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    cuda = str(device).startswith("cuda")
    if cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        # Joined once per process and left at exit: several runs in one process (tests) share the group.
        atexit.register(_leave)
        owns = True
    return DistContext(rank=rank, world=world, local_rank=local_rank, owns_group=owns), device


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)
