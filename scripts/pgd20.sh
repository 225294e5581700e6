# Sourced by scripts/classifier_search.sh and scripts/classifier_selection.sh: issue 12's PGD yardstick, once.
# pgd20 EPS OUT.json [evaluate-classifier flags...]: untargeted L2 PGD with 20 steps of EPS/8 (per-sample early
# stopping, seed 0) on the demo's classifiers, 4 timestep buckets; skipped when OUT.json exists.
pgd20() {
  local eps=$1 out=$2; shift 2
  [ -f "$out" ] || .venv/bin/rguide evaluate-classifier --preset demo --buckets 4 --seed 0 --eps "$eps" \
      --step-size "$(python3 -c "print($eps/8)")" --attack-steps 20 --no-progress --out "$out" "$@"
}
