"""Measure how often the ranking's 95% intervals cover known Bradley-Terry (Davidson) strengths and tie parameter.

Votes are simulated from known strengths with ties (app.stats.synthetic.synthetic_arm_study), fitted and
bootstrapped as a study's votes are (app.stats.arms), over seeded repetitions. Prints the coverage per arm
and of the tie parameter. docs/statistics.md quotes its output.

    .venv/bin/python scripts/ranking_coverage.py --reps 200 --boot 300 --item-sd 0 0.3
"""
from __future__ import annotations

import argparse

import numpy as np

from app.stats.arms import oriented_votes, rank_votes
from app.stats.ranking import ranking_json
from app.stats.synthetic import synthetic_arm_study

TRUTH = {"robust": 0.4, "vanilla": 0.0, "unguided": -0.6}


def coverage(reps: int, n_boot: int, item_sd: float, nu: float, n_items: int, raters_per_pair: int) -> dict:
    truth = np.array(list(TRUTH.values()))
    truth = truth - truth.mean()
    hits, hit_nu, widths = np.zeros(len(TRUTH)), 0, []
    for rep in range(reps):
        votes = synthetic_arm_study(TRUTH, nu, n_items=n_items, raters_per_pair=raters_per_pair, n_raters=40,
                                    seed=rep, item_sd=item_sd)
        order, kept, _ = oriented_votes(votes)
        ranking = ranking_json(rank_votes(kept, order, n_boot=n_boot, seed=rep))
        for i, arm in enumerate(ranking["arms"]):
            hits[i] += arm["ci"][0] <= truth[i] <= arm["ci"][1]
            widths.append(arm["ci"][1] - arm["ci"][0])
        hit_nu += ranking["tie"]["ci"][0] <= nu <= ranking["tie"]["ci"][1]
    return {"coverage": dict(zip(TRUTH, (hits / reps).round(3).tolist())), "tie": round(hit_nu / reps, 3),
            "mean_width": round(float(np.mean(widths)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--boot", type=int, default=300)
    parser.add_argument("--nu", type=float, default=0.8)
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--raters-per-pair", type=int, default=5)
    parser.add_argument("--item-sd", type=float, nargs="+", default=[0.0, 0.3])
    args = parser.parse_args()
    print(f"truth (centred log-strengths): {TRUTH}, nu = {args.nu}; {args.items} items x 3 arm pairs x "
          f"{args.raters_per_pair} raters; {args.reps} repetitions, {args.boot} bootstrap replicates each")
    for sd in args.item_sd:
        print(f"item_sd {sd}: {coverage(args.reps, args.boot, sd, args.nu, args.items, args.raters_per_pair)}")


if __name__ == "__main__":
    main()
