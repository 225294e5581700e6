#!/usr/bin/env bash
# The pictures and numbers of docs/analysis.md (and the README's pictures), on the demo preset:
#
#   scripts/analysis_figures.sh [OUT_DIR]        (default: runs/analysis)
#
# Each command writes OUT_DIR/<kind>/<kind>.png and <kind>.json (settings, seeds, provenance and the summary
# numbers); gradients and maximize also write a markdown table (<kind>.md), which is what docs/analysis.md
# quotes. The PNGs are then copied to docs/img/. Rerun it after retraining a demo network and update the
# numbers in docs/analysis.md from the .md tables it prints.
# `rguide viz reproduce OUT_DIR/<kind>/<kind>.json` checks any of them bit for bit.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/analysis}
rguide=${RGUIDE:-.venv/bin/rguide}   # e.g. RGUIDE="python -m rguide" from a checkout on PYTHONPATH
mkdir -p "$OUT" docs/img

# Alignment numbers over all 500 held-out digits, 4 timestep buckets; the picture shows the first 2.
$rguide viz gradients  --preset demo --seed 0 --show 2 --out "$OUT/gradients" --no-progress
# Class maximisation of all 500 held-out digits toward a random other digit each; the picture shows 4.
$rguide viz maximize   --preset demo --seed 0 --show 4 --out "$OUT/maximize" --no-progress
$rguide viz trajectory --preset demo --labels 3,8 --seed 5 --frames 6 --out "$OUT/trajectory" --no-progress
$rguide viz compare    --preset demo --labels 0,1,2,3,4,5,6,7,8,9 --seed 0 --out "$OUT/compare" --no-progress
# A smaller version of the model card's table (100 digits per row, seeds 0..99 in every row, 50 steps), as curves
# (the model card's own, --per-class 20 --steps 100, is four times the sampling).
$rguide sweep --preset demo --guidance none,vanilla,robust --scales 0.25,0.5,1,2 --per-class 10 --steps 50 \
    --seed 0 --out "$OUT/sweep" --no-progress

for kind in gradients maximize trajectory compare sweep; do
    cp "$OUT/$kind/$kind.png" "docs/img/$kind.png"
done
ls -l docs/img
