"""The small digit CNN whose penultimate layer is the feature of FID and precision/recall on the demo data.

Stored as one file: its config, its weights (half precision to ship small)
and the training info; ``as_stored`` gives the network a saved file would
load, so its accuracy can be measured as shipped without writing the file.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


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
