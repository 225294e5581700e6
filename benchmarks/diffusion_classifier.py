"""The diffusion classifier's cost against its accuracy: full schedule versus staged elimination.

    .venv/bin/python benchmarks/diffusion_classifier.py [--preset demo] [--n 50] [--full 15] [--staged 5:2,10]
                                                        [--schedules 5,10:3,30] [--seed 0] [--threads 1]

Classifies the same --n held-out digits (the first n of a permutation seeded
--seed) with each schedule, all sharing the (timestep, noise) list of --seed,
and prints per schedule: network evaluations per image, images per second,
accuracy with its Clopper-Pearson 95% interval, and the share of digits on
which it agrees with the full schedule, then the staged/full ratios. Runs are
interleaved (full, staged, full, staged) when --repeats > 1 and the faster
time kept, so a machine busy with other work slows both sides alike.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--full", default="15", help="the baseline: every class on this many timesteps")
    ap.add_argument("--staged", default="5:2,10", help="staged elimination to compare with it")
    ap.add_argument("--schedules", default="", help="more schedules to list (comma-separated by ';')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch", type=int, default=10, help="images per classify call")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from model_core.data import heldout_data, load_dataset
    from model_core.diffusion_classifier.classifier import from_pipeline
    from model_core.pipeline import get_pipeline
    from model_core.robustness.report import binomial_interval, heldout_indices

    pipe = get_pipeline(args.preset, "cpu")
    spec, split = heldout_data(pipe.preset)
    ds = load_dataset(spec, split=split, image_size=pipe.preset.image_size, channels=pipe.preset.in_channels)
    idx = heldout_indices(len(ds), args.n, args.seed)
    x, y = ds.images[idx], ds.labels[idx]
    schedules = [args.full, args.staged] + [s for s in args.schedules.split(";") if s.strip()]
    results: dict[str, dict] = {}
    for _ in range(max(args.repeats, 1)):
        for sched in schedules:
            dc = from_pipeline(pipe, schedule=sched, seed=args.seed)
            t0 = time.perf_counter()
            preds = torch.cat([dc.classify(x[i:i + args.batch]).predictions for i in range(0, len(x), args.batch)])
            secs = time.perf_counter() - t0
            prev = results.get(sched)
            if prev is None or secs < prev["seconds"]:
                results[sched] = {"seconds": secs, "preds": preds, "evals": dc.describe()["evaluations_per_image"]}
    full = results[args.full]
    print(f"preset {args.preset}: {args.n} held-out digits, seed {args.seed}, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    print("| schedule | network evaluations / image | images / s | accuracy [95% CI] | agrees with full |")
    print("|---|---:|---:|---|---:|")
    for sched in schedules:
        r = results[sched]
        k = int((r["preds"] == y).sum())
        lo, hi = binomial_interval(k, args.n)
        agree = float((r["preds"] == full["preds"]).float().mean())
        print(f"| {sched} | {r['evals']} | {args.n / r['seconds']:.2f} | {k / args.n:.3f} [{lo:.3f}, {hi:.3f}] | "
              f"{agree:.3f} |")
    st = results[args.staged]
    print(f"staged {args.staged} / full {args.full}: network evaluations {st['evals'] / full['evals']:.2f}x, "
          f"time {st['seconds'] / full['seconds']:.2f}x")


if __name__ == "__main__":
    main()
