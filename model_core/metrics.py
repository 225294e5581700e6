"""FID and precision/recall between generated and real images, over a pluggable feature network.

* **Features**: any module mapping images in [-1, 1] (N, C, H, W) to (N, D),
  with a ``num_features`` attribute. Two ship with the project:
  Inception-V3 pool features from a user-given weights file
  (``model_core.inception``, for ImageNet-like presets) and
  :class:`DigitFeatureNet`, a small CNN trained on the demo's clean training
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
import torch.nn.functional as F
from torch import nn


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


# -- the digits' feature network ---------------------------------------------------------
class DigitFeatureNet(nn.Module):
    """A small CNN classifier of clean digits; ``forward`` returns its penultimate (feature) layer."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 32,
                 num_features: int = 128):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size,
                       "width": width, "num_features": num_features}
        self.num_features = num_features
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.fc = nn.Linear(2 * width * side * side, num_features)
        self.head = nn.Linear(num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def train_feature_net(train, test, *, steps: int = 1500, batch_size: int = 128, lr: float = 1e-3,
                      seed: int = 0, crop_pad: int = 2, progress: bool = True) -> tuple[DigitFeatureNet, dict]:
    """Train :class:`DigitFeatureNet` on clean images; returns it and its held-out accuracy."""
    from tqdm import tqdm

    from model_core.data import augment, batch_indices
    from model_core.training import step_generator

    torch.manual_seed(seed)
    net = DigitFeatureNet(train.in_channels, train.num_classes, train.image_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    bar = tqdm(range(steps), desc="feature net", disable=not progress)
    for step in bar:
        net.train()
        idx = torch.from_numpy(batch_indices(len(train), batch_size, seed, step))
        x = augment(train.images[idx], step_generator(seed, step, "augment"), crop_pad)
        loss = F.cross_entropy(net.logits(x), train.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    acc = classify_accuracy(net, test.images, test.labels)
    return net.eval(), {"test_accuracy": acc, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                        "crop_pad": crop_pad, "n_test": len(test)}


@torch.no_grad()
def classify_accuracy(net: DigitFeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    preds = torch.cat([net.logits(images[i:i + 500]).argmax(-1) for i in range(0, len(images), 500)])
    return float((preds == labels).double().mean())


def _stored_state(net: DigitFeatureNet, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).clone()
            for k, v in net.state_dict().items()}


def as_stored(net: DigitFeatureNet, dtype: torch.dtype) -> DigitFeatureNet:
    """The float32 network that loading a file saved in ``dtype`` gives back, without the file."""
    copy = DigitFeatureNet(**net.config)
    copy.load_state_dict(_stored_state(net, dtype))
    return copy.eval().requires_grad_(False)


def save_feature_net(net: DigitFeatureNet, path: str | Path, info: dict, dtype: torch.dtype = torch.float32) -> None:
    """Config, weights (optionally stored in half precision to ship small) and training info in one file."""
    torch.save({"config": net.config, "state_dict": _stored_state(net, dtype), "info": info}, path)


def load_feature_net(path: str | Path) -> DigitFeatureNet:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature network weights not found at {path}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = DigitFeatureNet(**blob["config"])
    net.load_state_dict(blob["state_dict"])
    return net.eval().requires_grad_(False)


def load_extractor(kind: str, path: str | Path | None = None) -> nn.Module:
    """``digits`` (a DigitFeatureNet file) or ``inception`` (Inception-V3 weights from a user-given path)."""
    if kind == "digits":
        if path is None:
            raise ValueError("the digits feature network needs a weights path")
        return load_feature_net(path)
    if kind == "inception":
        from model_core.inception import load_inception

        return load_inception(path)
    raise ValueError(f"feature network {kind!r} is unknown; choose 'digits' or 'inception'")
