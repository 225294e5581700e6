#!/usr/bin/env bash
# Chooses a checkpoint of a robust demo-classifier run by held-out robustness, on a validation split that the run
# did not train on and that is not the 500 test digits (MODEL_CARD.md, "Searching for a more robust classifier").
#
#   scripts/classifier_selection.sh RUN_DIR VAL.npz [EPS]
#
# RUN_DIR: a `rguide train-classifier --keep-every N` run (its snapshots/step-*/ hold model.pt and ema.pt).
# VAL.npz: the validation images; make the split with `--holdout` when training (see the card for the commands).
# Every snapshot's EMA weights (and the raw weights of every fourth) get untargeted L2 PGD-20 (step EPS/8,
# early stopping, seed 0) at t < 250; one JSON per weights file in RUN_DIR/select/, computed once; prints each
# accuracy and the best.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1; VAL=$2; EPS=${3:-5}
source scripts/pgd20.sh
mkdir -p "$RUN/select"
i=0
for d in "$RUN"/snapshots/step-*; do
  ws=ema; [ $((i % 4)) -eq 3 ] && ws="ema model"; i=$((i + 1))
  for w in $ws; do
    f="$RUN/select/$(basename "$d")-$w-eps$EPS.json"
    RGUIDE_DEMO_ROBUST=$(realpath "$d/$w.pt") pgd20 "$EPS" "$f" --classifiers robust --data "$VAL" > /dev/null
  done
done
python3 - "$RUN/select" "$EPS" <<'PY'
import json, pathlib, sys
rows = []
for f in sorted(pathlib.Path(sys.argv[1]).glob(f"*-eps{sys.argv[2]}.json")):
    b = json.loads(f.read_text())["results"]["robust"]["buckets"]["0-249"]
    rows.append((b["adv_acc"], f.stem))
    print(f"{f.stem}: PGD-20 at t < 250 {b['adv_acc']:.3f} (clean {b['clean_acc']:.3f}, n {b['n']})")
print("best: %s (%.3f)" % (max(rows)[1], max(rows)[0]))
PY
