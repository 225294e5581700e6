"""Time per guided sampling step on CPU: pair mode batched vs. one after the other vs. unguided.

    .venv/bin/python benchmarks/sampling.py [--batch 4] [--steps 20] [--repeats 3] [--threads 2] [--preset demo]

All three runs use the same ADM-architecture models (random weights; the cost
of a step does not depend on the weights): by default a 32x32 RGB UNet of 8M
parameters, with --preset the preset's own diffusion model and classifier
configs (e.g. `--preset demo --batch 1 --steps 100` times one demo request).
They use the same labels and seeds:

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
from model_core.sampling.loop import Trajectory, sample
from model_core.models.adm import classifier_from_config, unet_from_config

UNET = dict(image_size=32, in_channels=3, num_classes=10, num_channels=64, num_res_blocks=2, channel_mult="1,2,2",
            learn_sigma=True, class_cond=True, attention_resolutions="16,8", num_heads=4, num_head_channels=-1,
            num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True, use_fp16=False,
            use_new_attention_order=False)
CLF = dict(image_size=32, in_channels=3, num_classes=10, classifier_width=32, classifier_depth=2,
           channel_mult="1,2,2,4", classifier_attention_resolutions="16,8", num_head_channels=64,
           classifier_use_scale_shift_norm=True, classifier_resblock_updown=True, classifier_pool="attention",
           classifier_use_fp16=False)


def build(preset: str | None):
    unet_cfg, clf_cfg, process = UNET, CLF, {"learn_sigma": True}
    if preset:
        from model_core.presets import get_preset

        p = get_preset(preset)
        unet_cfg, process = p.diffusion["model"], p.diffusion["process"]
        clf_cfg = p.classifiers["robust"]["model"]
    torch.manual_seed(0)
    unet = unet_from_config(unet_cfg).eval().requires_grad_(False)
    clfs = {m: classifier_from_config(clf_cfg).eval().requires_grad_(False) for m in ("robust", "vanilla")}
    shape = (unet_cfg["in_channels"], unet_cfg["image_size"], unet_cfg["image_size"])
    return unet, clfs, process, shape


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
    ap.add_argument("--preset", default=None, help="time this preset's architectures instead of the default UNet")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unet, clfs, process, shape = build(args.preset)
    d = create_diffusion(process, str(args.steps))
    num_classes = unet.num_classes or 10
    labels = list(range(args.batch))
    seeds = [1000 + i for i in labels]

    def trajs(method, scale):
        return [Trajectory(y % num_classes, s, method, scale) for y, s in zip(labels, seeds)]

    pair = lambda: sample(d, unet, clfs, trajs("robust", 1.0) + trajs("vanilla", 0.5), shape)
    sequential = lambda: (sample(d, unet, clfs, trajs("robust", 1.0), shape),
                          sample(d, unet, clfs, trajs("vanilla", 0.5), shape))
    unguided = lambda: sample(d, unet, clfs, trajs("none", 0.0), shape)
    guided = lambda: sample(d, unet, clfs, trajs("robust", 1.0), shape)

    t_seq = timed(sequential, args.repeats) / args.steps
    t_pair = timed(pair, args.repeats) / args.steps
    t_none = timed(unguided, args.repeats) / args.steps
    t_one = timed(guided, args.repeats) / args.steps
    size = f"{shape[1]}x{shape[2]}x{shape[0]}"
    print(f"config: {args.preset or 'default'} {size} UNet {sum(p.numel() for p in unet.parameters()):,} params, classifier "
          f"{sum(p.numel() for p in clfs['robust'].parameters()):,} params, B={args.batch}, {args.steps} steps, "
          f"{args.threads} threads, torch {torch.__version__}")
    print(f"pair, sequential (baseline): {t_seq * 1e3:8.1f} ms/step  (2B={2 * args.batch} guided trajectories)")
    print(f"pair, batched:               {t_pair * 1e3:8.1f} ms/step  ratio vs baseline {t_pair / t_seq:.2f}")
    print(f"unguided (B={args.batch}):             {t_none * 1e3:8.1f} ms/step  ratio vs baseline {t_none / t_seq:.2f}")
    print(f"robust only (B={args.batch}):          {t_one * 1e3:8.1f} ms/step  ratio vs baseline {t_one / t_seq:.2f}")
    print(f"guided pair costs {t_pair / t_none:.2f}x an unguided step of B")
    print(f"whole request of {args.steps} steps: pair {t_pair * args.steps:.2f} s, "
          f"robust only {t_one * args.steps:.2f} s, unguided {t_none * args.steps:.2f} s")


if __name__ == "__main__":
    main()
