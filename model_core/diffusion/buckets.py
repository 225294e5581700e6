"""Timestep buckets: equal-width ranges of training steps, for per-bucket logs and evaluations."""
from __future__ import annotations

from typing import Any

import torch


def bucket_edges(num_timesteps: int, buckets: int) -> list[tuple[int, int]]:
    """Equal-width timestep ranges [lo, hi), e.g. 0-249, 250-499, ... for T=1000 and 4 buckets."""
    bounds = [round(i * num_timesteps / buckets) for i in range(buckets + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(buckets)]


def bucket_name(lo: int, hi: int) -> str:
    return f"{lo}-{hi - 1}"


def bucket_stats(t: torch.Tensor, edges: list[tuple[int, int]], values: dict[str, torch.Tensor]) -> dict:
    """Per bucket: the count and the mean of each per-sample value."""
    out = {}
    for lo, hi in edges:
        mask = (t >= lo) & (t < hi)
        n = int(mask.sum())
        entry: dict[str, Any] = {"n": n}
        for key, v in values.items():
            entry[key] = float(v[mask].float().mean()) if n else None
        out[bucket_name(lo, hi)] = entry
    return out
