"""Time per guided sampling step on CPU: pair mode batched vs. one after the other vs. unguided.

    .venv/bin/python benchmarks/sampling.py [--batch 4] [--steps 20] [--repeats 3] [--threads 2]

All three runs use the same small ADM-architecture models (random weights; the
cost of a step does not depend on the weights) and the same labels and seeds:

* pair, batched:    robust + vanilla trajectories in one call, one UNet forward of 2B per step;
* pair, sequential: the same 2B trajectories as two calls of B (robust, then vanilla);
* unguided:         B trajectories with guidance "none" (no classifier backward).

Prints seconds per step of the whole request and the ratios against the
sequential baseline measured in the same process.
"""
from __future__ import annotations

import argparse
import time

import torch

from model_core.diffusion import create_diffusion
from model_core.sampling import Trajectory, sample
from model_core.unet import classifier_from_config, unet_from_config

UNET = dict(image_size=32, in_channels=3, num_classes=10, num_channels=64, num_res_blocks=2, channel_mult="1,2,2",
            learn_sigma=True, class_cond=True, attention_resolutions="16,8", num_heads=4, num_head_channels=-1,
            num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True, use_fp16=False,
            use_new_attention_order=False)
CLF = dict(image_size=32, in_channels=3, num_classes=10, classifier_width=32, classifier_depth=2,
           channel_mult="1,2,2,4", classifier_attention_resolutions="16,8", num_head_channels=64,
           classifier_use_scale_shift_norm=True, classifier_resblock_updown=True, classifier_pool="attention",
           classifier_use_fp16=False)


def build():
    torch.manual_seed(0)
    unet = unet_from_config(UNET).eval().requires_grad_(False)
    clfs = {m: classifier_from_config(CLF).eval().requires_grad_(False) for m in ("robust", "vanilla")}
    return unet, clfs


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4, help="labels per request (B)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unet, clfs = build()
    d = create_diffusion({"learn_sigma": True}, str(args.steps))
    shape = (3, 32, 32)
    labels = list(range(args.batch))
    seeds = [1000 + i for i in labels]

    def trajs(method, scale):
        return [Trajectory(y % 10, s, method, scale) for y, s in zip(labels, seeds)]

    pair = lambda: sample(d, unet, clfs, trajs("robust", 1.0) + trajs("vanilla", 0.5), shape)
    sequential = lambda: (sample(d, unet, clfs, trajs("robust", 1.0), shape),
                          sample(d, unet, clfs, trajs("vanilla", 0.5), shape))
    unguided = lambda: sample(d, unet, clfs, trajs("none", 0.0), shape)

    t_seq = timed(sequential, args.repeats) / args.steps
    t_pair = timed(pair, args.repeats) / args.steps
    t_none = timed(unguided, args.repeats) / args.steps
    print(f"config: 32x32 UNet {sum(p.numel() for p in unet.parameters()):,} params, classifier "
          f"{sum(p.numel() for p in clfs['robust'].parameters()):,} params, B={args.batch}, {args.steps} steps, "
          f"{args.threads} threads, torch {torch.__version__}")
    print(f"pair, sequential (baseline): {t_seq * 1e3:8.1f} ms/step  (2B={2 * args.batch} guided trajectories)")
    print(f"pair, batched:               {t_pair * 1e3:8.1f} ms/step  ratio vs baseline {t_pair / t_seq:.2f}")
    print(f"unguided (B={args.batch}):             {t_none * 1e3:8.1f} ms/step  ratio vs baseline {t_none / t_seq:.2f}")
    print(f"guided pair costs {t_pair / t_none:.2f}x an unguided step of B")


if __name__ == "__main__":
    main()
