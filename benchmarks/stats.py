"""Time of all preference statistics for a study of the paper's size, with a 2,000-replicate bootstrap.

    .venv/bin/python benchmarks/stats.py [--pairs 200] [--bootstrap 2000] [--repeats 3] [--loop-replicates 10]

Study: synthetic, seeded (app.stats.synthetic): 200 pairs, 19 to 36 raters
per pair (mean 25.09), about 5,000 answers, as in the paper's survey.
Measured in this process, best of --repeats runs each:

* compute_all with the bootstrap                (what `rguide stats` and the API run);
* compute_all with the bootstrap off            (baseline 1: everything else);
* the two-way cluster bootstrap alone, vectorised;
* the same bootstrap as a plain Python loop     (baseline 2: a few replicates, extrapolated).

Prints seconds and two ratios: how much the bootstrap adds to the rest of the
statistics, and how much faster the vectorised bootstrap is than the loop.
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
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-replicates", type=int, default=10, help="replicates of the plain-loop baseline")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from app.stats import compute_all
    from app.stats.significance import cluster_bootstrap, naive_loop_bootstrap
    from app.stats.synthetic import synthetic_study

    votes = synthetic_study(n_pairs=args.pairs, seed=args.seed)
    pairs = sorted({v.pair_id for v in votes})
    raters = sorted({v.rater_id for v in votes})
    p_index = {p: i for i, p in enumerate(pairs)}
    r_index = {r: i for i, r in enumerate(raters)}
    code = {"robust": 0, "vanilla": 1, "same": 2}
    p_idx = np.array([p_index[v.pair_id] for v in votes])
    r_idx = np.array([r_index[v.rater_id] for v in votes])
    y = np.array([code[v.choice] for v in votes])
    print(f"study: {len(pairs)} pairs, {len(raters)} raters, {len(votes)} answers; bootstrap {args.bootstrap} "
          f"replicates; python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")

    compute_all(votes, n_boot=50)  # warm-up: imports, allocator
    t_full = best_of(lambda: compute_all(votes, n_boot=args.bootstrap, seed=args.seed), args.repeats)
    t_off = best_of(lambda: compute_all(votes, n_boot=0), args.repeats)
    t_boot = best_of(lambda: cluster_bootstrap(p_idx, r_idx, y, len(pairs), len(raters), n_boot=args.bootstrap,
                                               seed=args.seed), args.repeats)
    start = time.perf_counter()
    naive_loop_bootstrap(p_idx, r_idx, y, len(pairs), len(raters), n_boot=args.loop_replicates, seed=args.seed)
    t_loop = (time.perf_counter() - start) / args.loop_replicates * args.bootstrap

    print(f"compute_all, bootstrap {args.bootstrap:>5}:   {t_full:8.3f} s")
    print(f"compute_all, bootstrap off:    {t_off:8.3f} s   (baseline 1)")
    print(f"bootstrap alone, vectorised:   {t_boot:8.3f} s")
    print(f"bootstrap as a plain loop:     {t_loop:8.3f} s   (baseline 2: {args.loop_replicates} replicates timed, "
          f"extrapolated to {args.bootstrap})")
    print()
    print(f"ratio full / bootstrap off:    {t_full / t_off:8.2f}x  -> the {args.bootstrap}-replicate bootstrap makes "
          f"the whole computation {t_full / t_off:.2f} times as long as without it")
    print(f"ratio loop / vectorised:       {t_loop / t_boot:8.1f}x  -> the vectorised bootstrap is that many times "
          "faster than the same bootstrap computed answer by answer in Python")


if __name__ == "__main__":
    main()
