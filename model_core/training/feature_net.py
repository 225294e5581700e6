"""Training the digit feature network (``model_core.models.feature_net``) on clean images."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model_core.models.feature_net import DigitFeatureNet, classify_accuracy


def train_feature_net(train, test, *, steps: int = 1500, batch_size: int = 128, lr: float = 1e-3,
                      seed: int = 0, crop_pad: int = 2, progress: bool = True) -> tuple[DigitFeatureNet, dict]:
    """Train :class:`DigitFeatureNet` on clean images; returns it and its held-out accuracy."""
    from tqdm import tqdm

    from model_core.data import augment, batch_indices
    from model_core.training.loop import step_generator

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
