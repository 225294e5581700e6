"""Real-image reference statistics: computed once per feature network and real set, stored, reused.

A reference is the real images' features under one feature network, with
their mean ``mu`` and covariance ``sigma`` (float64), in one ``.npz`` laid
out like the ADM evaluator's reference batches (``mu``, ``sigma``; the
per-image ``features`` besides, since precision and recall need them, not
only the moments) and a ``.json`` sidecar saying what it was computed from.
ADM's files also hold the images (``arr_0``) and spatial statistics
(``mu_s``, ``sigma_s``); ours do not. Our ``mu`` and ``sigma`` are ADM's
when the feature network is Inception-V3's pool features; with the digits
network they are that network's.

The file's name is a key of (feature network kind, the weights file's
sha256, the real set's spec and split, and the size and modification time of
the files behind it), so every evaluation with the same network and real set
reads the same file, and a changed weights file or data set gets a new one.
The store is ``$RGUIDE_REFERENCE_DIR`` (default ``~/.cache/rguide/reference``;
the service's workers use ``MEDIA_DIR/reference``, shared by all of them).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_core import settings as core_settings
from model_core.files import atomic_write, atomic_write_text

FORMAT = "rguide-reference-1"


@dataclass
class Reference:
    features: torch.Tensor   # float32 (N, D), exactly as the network gave them
    mu: np.ndarray           # float64 (D,)
    sigma: np.ndarray        # float64 (D, D)
    path: Path
    info: dict[str, Any]     # kind, weights, weights_sha256, real (the data set's description), created


def default_dir() -> Path:
    return core_settings.env_path(core_settings.REFERENCE_DIR) or Path("~/.cache/rguide/reference").expanduser()


def _source_signature(spec: str) -> Any:
    """What changes when the files behind a data spec change: size and mtime of each (not their bytes)."""
    path = Path(spec).expanduser()
    if path.is_file():
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    if path.is_dir():
        entries = []
        for root, _dirs, files in os.walk(path):
            for name in sorted(files):
                st = (Path(root) / name).stat()
                entries.append([os.path.relpath(Path(root) / name, path), st.st_size, st.st_mtime_ns])
        return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()
    return spec  # a built-in set ("mnist")


def reference_key(kind: str, weights: str | None, real_spec: str, split: str) -> tuple[str, dict]:
    from model_core.provenance import file_sha256

    weights_sha = file_sha256(weights) if weights else None
    fields = {"format": FORMAT, "kind": kind, "weights_sha256": weights_sha, "real": real_spec, "split": split,
              "source": _source_signature(real_spec)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24], fields


def compute_reference(extractor, images: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    from model_core.evaluation.metrics import extract_features

    feats = extract_features(extractor, images)
    f64 = feats.double().numpy()
    return feats, f64.mean(axis=0), np.cov(f64, rowvar=False)


def reference_for(kind: str, weights: str | None, extractor, real_spec: str, split: str, *,
                  image_shape: tuple[int, int, int] | None = None, cache_dir=None) -> Reference:
    """The stored reference for this network and real set, computing and storing it the first time.

    Two processes that compute it at once write the same bytes; the rename
    of the finished file is atomic, so a reader never sees half of one.
    """
    from model_core.data import load_dataset

    directory = Path(cache_dir) if cache_dir is not None else default_dir()
    key, fields = reference_key(kind, weights, real_spec, split)
    path = directory / f"{kind}-{key}.npz"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        with np.load(path) as stored:
            feats = torch.from_numpy(stored["features"].astype(np.float32))
            mu, sigma = stored["mu"], stored["sigma"]
        info = json.loads(meta_path.read_text())
        _check_shape(info["real"], image_shape)
        return Reference(feats, mu, sigma, path, info)
    ds = load_dataset(real_spec, split=split, setting="real_data")
    _check_shape({"shape": list(ds.images.shape[1:])}, image_shape)
    feats, mu, sigma = compute_reference(extractor, ds.images)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: np.savez(p, mu=mu, sigma=sigma, features=feats.numpy()), suffix=".tmp.npz")
    info = {**fields, "weights": weights, "real": ds.describe(), "num_features": int(feats.shape[1]),
            "file": path.name}
    atomic_write_text(meta_path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return Reference(feats, mu, sigma, path, info)


def _check_shape(real: dict, image_shape) -> None:
    if image_shape is not None and tuple(real["shape"]) != tuple(image_shape):
        raise ValueError(f"real images are {tuple(real['shape'])} but the preset makes {tuple(image_shape)}")
