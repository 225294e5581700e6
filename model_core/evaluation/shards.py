"""The computations of an evaluation, in pieces a worker can run alone and a merge can put together.

* :func:`real_reference`: the real images' features, mean and covariance for
  one feature network, computed once and stored (:mod:`model_core.evaluation.reference`);
* :func:`compute_shard`: one shard's images (its seeds from the plan), their
  features and predicted labels, in feature blocks aligned to the row;
* :func:`row_result`: a row's metrics from its images' features, whether they
  came from one process or from the shards that made the row.

``rguide evaluate`` runs these in one process; the service's workers run
:func:`compute_shard` per shard and :func:`row_result` when a row's last shard
is in, so both give the same numbers for the same seeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from model_core.evaluation.plan import Plan, Row


@dataclass
class ShardOutput:
    images: np.ndarray          # uint8 (N, H, W, C)
    features: np.ndarray        # float32 (N, D)
    predictions: np.ndarray | None  # int64 (N,): the feature network's label for each image, when it classifies
    seconds: float              # wall time of the sampling

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"images": self.images, "features": self.features, "seconds": np.array(self.seconds)}
        if self.predictions is not None:
            out["predictions"] = self.predictions
        return out

    @classmethod
    def from_arrays(cls, d) -> "ShardOutput":
        return cls(d["images"], d["features"], d["predictions"] if "predictions" in d else None,
                   float(d["seconds"]))


def as_model_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def block_features(extractor, images: np.ndarray, feature_batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (and predicted labels) of consecutive images, one network batch per ``feature_batch`` block.

    ``images`` must start at a block boundary of its row: then every block is
    the same batch whatever shard computed it.
    """
    classify = getattr(extractor, "logits", None)
    extractor = extractor.eval()
    feats, preds = [], []
    for i in range(0, len(images), feature_batch):
        x = as_model_input(images[i:i + feature_batch])
        feats.append(extractor(x).float().cpu())
        if classify is not None:
            preds.append(classify(x).argmax(-1).cpu())
    features = torch.cat(feats).numpy().astype(np.float32)
    return features, (torch.cat(preds).numpy().astype(np.int64) if classify is not None else None)


def compute_shard(p: Plan, row: Row, start: int, stop: int, pipe, extractor,
                  callback: Callable[[int, int], None] | None = None) -> ShardOutput:
    """Sample images ``start..stop-1`` of ``row`` with their plan seeds, and their features.

    ``callback(done, total)`` sees the sampling steps of this shard.
    """
    labels = list(p.labels[start:stop])
    seeds = p.seeds(row, start, stop)
    cb = None
    if callback is not None:
        def cb(step, total, *_):
            callback(step, total)
    t0 = time.perf_counter()
    images = np.stack(pipe.sample(labels, seeds, row.method, row.scale, row.steps, row.sampler, callback=cb))
    seconds = time.perf_counter() - t0
    features, preds = block_features(extractor, images, p.settings.feature_batch)
    return ShardOutput(images, features, preds, seconds)


def row_result(p: Plan, row: Row, features: np.ndarray, predictions: np.ndarray | None, real_features,
               seconds_per_image: float | None, samples: str | None = None) -> dict[str, Any]:
    """One table row: FID, precision, recall (and label accuracy) of the row's images against the real set."""
    from model_core.evaluation.metrics import quality_metrics

    if len(features) != p.n:
        raise ValueError(f"row {row.index} has {len(features)} images' features, expected {p.n}")
    q = quality_metrics(torch.as_tensor(real_features), torch.from_numpy(np.asarray(features)), k=p.settings.k)
    from model_core.presets import get_preset

    seeds = p.seeds(row)
    # The sampler's one UNet forward per step, plus what the method's guidance adds per step (its kind's rule:
    # one classifier forward + backward for a classifier, classes x (draws + 1) UNet forwards for 'diffusion').
    cost = get_preset(p.preset).guidance_cost(row.method)
    out: dict[str, Any] = {
        "sampler": row.sampler, "steps": row.steps, "method": row.method, "scale": row.scale, **q.to_dict(),
        "unet_evals_per_image": row.num_steps * (1 + cost.unet),
        "classifier_evals_per_image": row.num_steps * cost.classifier,  # forward + backward each
        "seconds_per_image": seconds_per_image, "seeds": {"first": seeds[0], "last": seeds[-1]}}
    if samples is not None:
        out["samples"] = samples
    if predictions is not None:
        out["label_accuracy"] = float((torch.from_numpy(np.asarray(predictions)) ==
                                       torch.tensor(p.labels)).double().mean())
    return out


def real_reference(p: Plan, extractor, cache_dir=None):
    """The plan's real-image reference (features, mu, sigma), from the store or computed once and stored."""
    from model_core.evaluation.reference import reference_for

    return reference_for(p.feature_kind, p.feature_weights, extractor, p.real_data, p.real_split,
                         image_shape=None, cache_dir=cache_dir)


def merge_rows(p: Plan, results: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows in plan order; the seed-noise rows folded into their twins as ``second_seed_set``."""
    from model_core.evaluation.plan import TABLE_METRICS

    rows: list[dict[str, Any]] = []
    for row in p.rows:
        r = results[row.index]
        if row.seed_set == 0:
            rows.append(r)
        else:
            twin = next(x for x in rows if (x["sampler"], x["steps"], x["method"], x["scale"])
                        == (row.sampler, row.steps, row.method, row.scale))
            twin["second_seed_set"] = {k: r[k] for k in (*TABLE_METRICS, "label_accuracy", "seeds", "samples")
                                       if k in r}
    return rows
