"""Write the votes of a simulated three-arm study (known Davidson strengths with ties) as a tidy CSV.

docs/statistics.md shows its report ("A simulated three-arm study"):

    .venv/bin/python scripts/simulated_arms_study.py --out arms-votes.csv
    .venv/bin/rguide stats arms-votes.csv --html arms-report.html --forest-png forest.png --out arms.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.stats.export import write_votes_csv
from app.stats.synthetic import synthetic_arm_study

TRUTH = {"robust": 0.4, "vanilla": 0.0, "unguided": -0.6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--raters-per-pair", type=int, default=5)
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--nu", type=float, default=0.8)
    parser.add_argument("--item-sd", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--strengths", default=json.dumps(TRUTH), help="JSON: arm -> log-strength")
    args = parser.parse_args()
    strengths = json.loads(args.strengths)
    votes = synthetic_arm_study(strengths, args.nu, n_items=args.items, raters_per_pair=args.raters_per_pair,
                                n_raters=args.raters, seed=args.seed, item_sd=args.item_sd)
    write_votes_csv(args.out, votes)
    print(f"wrote {len(votes)} votes to {args.out} (strengths {strengths}, nu {args.nu}, item_sd {args.item_sd}, "
          f"seed {args.seed})")


if __name__ == "__main__":
    main()
