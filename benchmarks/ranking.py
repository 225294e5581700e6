"""Time of the multi-arm ranking's bootstrap: every replicate refitted at once against one scipy fit per replicate.

    .venv/bin/python benchmarks/ranking.py [--arms 5] [--items 200] [--bootstrap 2000] [--loop-replicates 20]

Study: synthetic, seeded (app.stats.synthetic.synthetic_arm_study): K arms with
spread strengths, all arm pairs on every item, 5 raters per shown pair.
Measured in this process, best of --repeats runs each:

* fit_ranking with the two-way cluster bootstrap (batched Newton over all replicates; what the report runs);
* the same replicates refitted one by one with scipy.optimize.minimize (BFGS) on the same weighted counts
  (baseline: --loop-replicates replicates, extrapolated).

Prints seconds and the ratio. The two agree on every replicate they both fit (checked here to 1e-4).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", type=int, default=5)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--loop-replicates", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from scipy.optimize import minimize

    from app.stats.arms import oriented_votes, rank_votes
    from app.stats.ranking import _BOOT_CHUNK, OUTCOMES, design_tensor, fit_batch, pigeonhole_weights
    from app.stats.synthetic import synthetic_arm_study

    strengths = {f"arm{i}": float(v) for i, v in enumerate(np.linspace(0.6, -0.6, args.arms))}
    votes = synthetic_arm_study(strengths, 0.8, n_items=args.items, raters_per_pair=5, n_raters=120, seed=0)
    order, kept, _ = oriented_votes(votes)
    print(f"study: {args.arms} arms, {args.items} items, {len(kept)} answers; bootstrap {args.bootstrap} replicates; "
          f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")

    batched = best_of(lambda: rank_votes(kept, order, n_boot=args.bootstrap, seed=0), args.repeats)

    # The baseline: the same weighted count tables, one scipy fit each.
    fit = rank_votes(kept, order, n_boot=0, seed=0)
    keys = fit["arm_pairs"]
    design = design_tensor(keys, len(order))
    index = {a: i for i, a in enumerate(order)}
    pair_col = {key: m for m, key in enumerate(keys)}
    items = {}
    raters = {}
    cols, item_idx, rater_idx = [], [], []
    for v in kept:
        out = 2 if v.choice == "same" else int(v.choice == v.arm_b)
        cols.append(pair_col[(index[v.arm_a], index[v.arm_b])] * OUTCOMES + out)
        item_idx.append(items.setdefault((v.label, v.seed), len(items)))
        rater_idx.append(raters.setdefault(v.rater_id, len(raters)))
    onehot = np.zeros((len(kept), len(keys) * OUTCOMES))
    onehot[np.arange(len(kept)), cols] = 1.0
    rng = np.random.default_rng(0)
    size = min(args.loop_replicates, _BOOT_CHUNK)
    w = pigeonhole_weights(rng, size, len(items))[:, item_idx] * pigeonhole_weights(rng, size, len(raters))[:, rater_idx]
    tables = (w @ onehot).reshape(size, len(keys), OUTCOMES)

    def nll(x, counts):
        z = np.einsum("mcp,p->mc", design, x)
        top = z.max(axis=1, keepdims=True)
        return -(np.sum(counts * z) - np.sum(counts.sum(1) * (top[:, 0] + np.log(np.exp(z - top).sum(1)))))

    def loop():
        return np.stack([minimize(nll, np.zeros(len(order)), args=(t,), method="BFGS").x for t in tables])

    per_replicate = best_of(loop, args.repeats) / size
    mine, ok = fit_batch(tables, design)
    agree = np.abs(mine[ok] - loop()[ok]).max()
    looped = per_replicate * args.bootstrap
    print(f"batched Newton, all {args.bootstrap} replicates : {batched:8.3f} s")
    print(f"scipy BFGS per replicate (x{args.bootstrap}, from {size}): {looped:8.3f} s")
    print(f"ratio (scipy loop / batched)             : {looped / batched:8.1f}x   (max |difference| {agree:.1e})")


if __name__ == "__main__":
    main()
