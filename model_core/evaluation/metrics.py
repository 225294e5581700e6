"""FID and precision/recall between generated and real images, over a pluggable feature network.

* **Features**: any module mapping images in [-1, 1] (N, C, H, W) to (N, D),
  with a ``num_features`` attribute. Two ship with the project:
  Inception-V3 pool features from a user-given weights file
  (``model_core.models.inception``, for ImageNet-like presets) and
  ``model_core.models.feature_net.DigitFeatureNet``, a small CNN trained on the demo's clean training
  digits whose penultimate layer is the feature (bundled with the demo preset).
* **FID**: torchmetrics' ``FrechetInceptionDistance`` fed with precomputed
  features (an identity "feature module"), so one feature pass serves FID,
  precision and recall.
* **Precision / recall** (Kynkaanniemi et al., 2019): the real manifold is the
  union of balls around each real feature with radius the distance to its
  k-th nearest real neighbour (k = 3); precision is the fraction of generated
  samples inside it; recall swaps the roles.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from model_core.errors import SettingError


# -- precision / recall -----------------------------------------------------------
def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.double(), b.double())


def knn_radii(features: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """Distance from each point to its k-th nearest *other* point of the same set."""
    n = features.shape[0]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {n}")
    out = torch.empty(n, dtype=torch.float64)
    for i in range(0, n, chunk):
        d = _pairwise(features[i:i + chunk], features)
        # Column 0 of the sorted distances is the point itself (distance 0).
        out[i:i + chunk] = d.kthvalue(k + 1, dim=1).values
    return out


def manifold_coverage(ref: torch.Tensor, ref_radii: torch.Tensor, query: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each query point: does it lie in some reference ball (distance <= that ball's radius)?"""
    inside = torch.empty(query.shape[0], dtype=torch.bool)
    for i in range(0, query.shape[0], chunk):
        d = _pairwise(query[i:i + chunk], ref)
        inside[i:i + chunk] = (d <= ref_radii[None, :]).any(dim=1)
    return inside


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of ``fake`` w.r.t. ``real`` features."""
    real, fake = real.detach().cpu(), fake.detach().cpu()
    precision = manifold_coverage(real, knn_radii(real, k), fake).double().mean().item()
    recall = manifold_coverage(fake, knn_radii(fake, k), real).double().mean().item()
    return precision, recall


# -- FID ----------------------------------------------------------------------------
class _Precomputed(nn.Module):
    """An identity 'feature extractor', so torchmetrics' FID can take features we computed once."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x):
        return x


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (torchmetrics, float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError("FID needs at least two real and two generated images")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} vs {fake.shape[1]}")
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    metric.update(real.detach().cpu().double(), real=True)
    metric.update(fake.detach().cpu().double(), real=False)
    return float(metric.compute())


@dataclass
class QualityMetrics:
    fid: float
    precision: float
    recall: float
    n_real: int
    n_fake: int

    def to_dict(self) -> dict:
        return {"fid": self.fid, "precision": self.precision, "recall": self.recall, "n_real": self.n_real,
                "n_fake": self.n_fake}


def quality_metrics(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> QualityMetrics:
    p, r = precision_recall(real, fake, k)
    return QualityMetrics(fid(real, fake), p, r, int(real.shape[0]), int(fake.shape[0]))


@torch.no_grad()
def extract_features(extractor: nn.Module, images: torch.Tensor, batch_size: int = 256,
                     device: str = "cpu") -> torch.Tensor:
    """Features of images in [-1, 1] (N, C, H, W), or of uint8 (N, H, W, C) arrays."""
    images = as_model_images(images)
    extractor = extractor.to(device).eval()
    outs = [extractor(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(outs)


def as_model_images(images) -> torch.Tensor:
    """uint8 HWC images (as the pipeline returns them) -> float NCHW in [-1, 1]; float NCHW passes through."""
    import numpy as np

    if isinstance(images, (list, tuple)):
        images = np.stack(images)
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 (N, H, W, C), got {images.dtype}")
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if images.dtype == torch.uint8:
        raise ValueError("uint8 tensors are ambiguous: pass float (N, C, H, W) in [-1, 1] or numpy HWC uint8")
    return images


def load_extractor(kind: str, path: str | Path | None = None) -> nn.Module:
    """``digits`` (a DigitFeatureNet file) or ``inception`` (Inception-V3 weights from a user-given path)."""
    if kind == "digits":
        if path is None:
            raise SettingError("feature_weights", "the digits feature network needs a weights file: give "
                                                  "{feature_weights}")
        from model_core.models.feature_net import load_feature_net

        return load_feature_net(path)
    if kind == "inception":
        from model_core.models.inception import load_inception

        return load_inception(path)
    raise ValueError(f"feature network {kind!r} is unknown; choose 'digits' or 'inception'")
