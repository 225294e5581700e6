#!/usr/bin/env bash
# Measures a candidate robust classifier of the demo preset against the bundled
# vanilla one with issue 12's two yardsticks (MODEL_CARD.md, "Searching for a
# more robust classifier"):
#   1. untargeted L2 PGD-20 (step eps/8, per-sample early stopping) on the 500
#      held-out digits, the t 0-249 bucket, at several radii;
#   2. class maximisation at t = 0 (target: a random other digit, L2, 7 steps of
#      2.5 eps / 7) read as the target by the bundled feature CNN, which is
#      neither of the two classifiers.
#
#   scripts/classifier_search.sh CANDIDATE.pt OUT_DIR [PGD_RADII] [MAX_RADII]
#
# CANDIDATE.pt: a run's ema.pt / model.pt or an exported file, or the word
# "vanilla" for the bundled vanilla classifier's numbers. Defaults: PGD at
# 3,4,5,6 and class maximisation at 4,6,8,10,12,16. Each result is a JSON file
# in OUT_DIR; a file already there is not computed again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$2
PGD=${3:-3,4,5,6}; MAX=${4:-4,6,8,10,12,16}
rguide=.venv/bin/rguide
source scripts/pgd20.sh
mkdir -p "$OUT"
if [ "$1" = vanilla ]; then WHO=vanilla; else WHO=robust; export RGUIDE_DEMO_ROBUST=$(realpath "$1"); fi
for eps in ${PGD//,/ }; do
  pgd20 "$eps" "$OUT/pgd20_eps$eps.json" --classifiers "$WHO" | tail -2
done
for eps in ${MAX//,/ }; do
  d="$OUT/maximize_eps$eps"
  [ -f "$d/maximize.json" ] || $rguide viz maximize --preset demo --seed 0 --eps "$eps" --classifiers "$WHO" --no-progress \
      --out "$d" > /dev/null
  python3 - "$d/maximize.json" "$eps" "$WHO" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]["classifiers"][sys.argv[3]]["judge_reads_target"]
print(f"class max eps {sys.argv[2]}: {sys.argv[3]} read as target {s['rate']:.3f} [{s['low']:.3f}, {s['high']:.3f}]")
PY
done
