"""Accuracy of a time-dependent classifier on noisy held-out images, clean and under PGD, per timestep bucket."""
from __future__ import annotations

from typing import Any

import torch

from model_core.data import ImageDataset
from model_core.diffusion.buckets import bucket_edges, bucket_name
from model_core.robustness.attacks import pgd_untargeted
from model_core.robustness.defaults import PAPER_ATTACK


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, ds: ImageDataset, process: dict, *,
                        attack: str = PAPER_ATTACK.attack, eps: float = PAPER_ATTACK.eps,
                        step_size: float = PAPER_ATTACK.step_size, attack_steps: int = PAPER_ATTACK.attack_steps,
                        buckets: int = 4,
                        seed: int = 0, batch_size: int = 250, device: str = "cpu", progress: bool = True) -> dict:
    """Clean and PGD accuracy on noisy held-out images, per timestep bucket.

    Every image is evaluated once per bucket at a timestep drawn uniformly
    inside the bucket, with noise and timesteps from ``seed``, so two
    classifiers evaluated with the same seed see identical x_t.
    """
    from tqdm import tqdm

    from model_core.diffusion import create_diffusion

    diffusion = create_diffusion(process)
    edges = bucket_edges(diffusion.num_timesteps, buckets)
    model = model.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    n = len(ds)
    results: dict[str, Any] = {}
    tot_clean = tot_adv = tot_n = 0
    bar = tqdm(total=len(edges) * n, desc="evaluating", unit="img", disable=not progress)
    for lo, hi in edges:
        t_all = torch.randint(lo, hi, (n,), generator=gen)
        noise_all = torch.randn(ds.images.shape, generator=gen)
        clean = adv = steps_used = 0
        for i in range(0, n, batch_size):
            x0 = ds.images[i:i + batch_size].to(device)
            y = ds.labels[i:i + batch_size].to(device)
            t = t_all[i:i + batch_size].to(device)
            x_t = diffusion.q_sample(x0, t, noise_all[i:i + batch_size].to(device))
            res = pgd_untargeted(model, x_t, t, y, norm=attack, eps=eps, step_size=step_size, steps=attack_steps)
            clean += int(res.clean_correct.sum())
            adv += int(res.adv_correct.sum())
            steps_used += int(res.steps_used.sum())
            bar.update(len(y))
        results[bucket_name(lo, hi)] = {"n": n, "clean_acc": clean / n, "adv_acc": adv / n,
                                        "mean_attack_steps": steps_used / n}
        tot_clean += clean
        tot_adv += adv
        tot_n += n
    bar.close()
    return {"clean_acc": tot_clean / tot_n, "adv_acc": tot_adv / tot_n, "buckets": results,
            "attack": {"norm": attack, "eps": eps, "step_size": step_size, "steps": attack_steps,
                       "early_stop": True}, "seed": seed, "data": ds.describe()}
