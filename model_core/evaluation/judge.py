"""A machine rater for the pairwise survey: a proxy judge that answers Left / Right / Same.

The survey asks "Which image is more realistic, and more aligned to the
description?". The judge scores each image x with requested class y by

    u(x, y) = log p_J(y | x) + w * log R(x)

* ``p_J`` is the softmax of a judge network that is *not* one of the guiding
  classifiers (for the demo: the bundled digit CNN of the FID features), so a
  guided image is not judged by the network that steered it;
* ``R`` is the realism score of Kynkaanniemi et al. (2019, Sec. 5): with
  ``NND_k(r)`` the distance from real feature r to its k-th nearest real
  neighbour, ``R(x) = max_r NND_k(r) / ||f(x) - f(r)||`` over the real set
  after dropping the half with the largest radii. R >= 1 means x lies inside
  some real sample's k-NN ball.

For a pair (A, B) the judge prefers the image with the larger u. Raters are
simulated around it: rater j sees ``d = u_A - u_B + noise * e_j`` with e_j
standard logistic noise drawn from (seed, pair, rater), answers "same" when
``|d| < same_margin`` and otherwise the side of the larger score. With
``noise`` 0 every simulated rater answers as the judge does.

This is a proxy, not a person: it cannot see artefacts the feature network
is blind to, it rewards whatever the judge network finds class-like, and the
noise and margin are assumptions about raters, not measurements of them.
docs/survey.md says how to read its numbers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from model_core.errors import SettingError
from model_core.evaluation.metrics import extract_features, knn_radii

LOGISTIC_SCALE = 1.0


@dataclass(frozen=True)
class JudgeSettings:
    realism_weight: float = 1.0   # w: how much realism counts against class evidence (log units)
    same_margin: float = 0.5      # |u_A - u_B| below this is answered "same"
    noise: float = 1.0            # scale of each simulated rater's logistic noise on u_A - u_B
    raters: int = 5               # simulated raters per pair
    k: int = 3                    # neighbours of the realism score
    seed: int = 0

    def validate(self) -> None:
        if not self.realism_weight >= 0:
            raise SettingError("realism_weight", f"{{realism_weight}} must be >= 0, got {self.realism_weight}")
        if not self.same_margin >= 0:
            raise SettingError("same_margin", f"{{same_margin}} must be >= 0, got {self.same_margin}")
        if not self.noise >= 0:
            raise SettingError("noise", f"{{noise}} must be >= 0, got {self.noise}")
        if int(self.raters) < 1:
            raise SettingError("raters", f"{{raters}} must be >= 1, got {self.raters}")
        if int(self.k) < 1:
            raise SettingError("k", f"{{k}} must be >= 1, got {self.k}")

    def to_dict(self) -> dict:
        return asdict(self)


class MachineJudge:
    """Scores images by class evidence and realism; ``net`` must have ``features(x)`` and ``logits(x)``."""

    def __init__(self, net: torch.nn.Module, real_images: torch.Tensor, *, k: int = 3, realism_weight: float = 1.0):
        for attr in ("features", "logits"):
            if not callable(getattr(net, attr, None)):
                raise SettingError("judge", f"the {{judge}} network has no {attr}(x) method")
        self.net = net.eval()
        self.realism_weight = float(realism_weight)
        real = extract_features(_Features(net), real_images).double()
        radii = knn_radii(real, k)
        # Kynkaanniemi et al. drop the half of the real set with the largest radii: an outlier's huge ball
        # would call anything realistic.
        keep = radii <= radii.median()
        self.ref, self.radii = real[keep], radii[keep]

    @torch.no_grad()
    def score(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Per image: ``log_p`` of its label, the judge's ``pred``iction, ``realism`` R and the utility ``u``."""
        log_p, realism, pred = [], [], []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].float()
            y = labels[i:i + batch_size].long()
            logits = self.net.logits(x).double()
            log_p.append(torch.log_softmax(logits, -1).gather(1, y[:, None])[:, 0])
            pred.append(logits.argmax(-1))
            f = self.net.features(x).double()
            d = torch.cdist(f, self.ref).clamp_min(1e-12)
            realism.append((self.radii[None, :] / d).max(dim=1).values)
        lp = torch.cat(log_p).numpy()
        r = torch.cat(realism).numpy()
        return {"log_p": lp, "pred": torch.cat(pred).numpy(), "realism": r, "u": lp + self.realism_weight * np.log(r)}


class _Features(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)


def simulated_answers(u_a: np.ndarray, u_b: np.ndarray, settings: JudgeSettings,
                      pair_keys: list[str]) -> list[list[tuple[str, str]]]:
    """Per pair, per simulated rater: (answer, side of A), answer in {"a", "b", "same"}.

    Each (pair, rater) draws its noise and its left/right placement from a
    generator seeded by (seed, pair key, rater), so adding pairs or raters
    leaves the others' answers as they were.
    """
    settings.validate()
    out = []
    for key, ua, ub in zip(pair_keys, u_a, u_b):
        answers = []
        for j in range(int(settings.raters)):
            rng = np.random.default_rng([int(settings.seed), _stable(key), j])
            side = "left" if rng.random() < 0.5 else "right"
            e = rng.logistic(0.0, LOGISTIC_SCALE)
            d = float(ua - ub) + settings.noise * e
            answer = "same" if abs(d) < settings.same_margin else ("a" if d > 0 else "b")
            answers.append((answer, side))
        out.append(answers)
    return out


def _stable(key: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
