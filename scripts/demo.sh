#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, generates a
# synthetic Criteo-shaped click log (never ../shared/data: its terms forbid
# copying) and trains the demo model on it: SerMaskNet + AMTL, embedded mode.
# Prints the test AUC, logloss and the AMTL storage saving.
#
#   scripts/demo.sh [--set section.key=value ...]   (passed to maskps train)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
data=runs/demo/data
if [ ! -s "$data/test.tsv" ]; then
  echo "== generating a synthetic click log: 250,000 rows, seed 1 -> $data/"
  build/common/maskps-gen --rows 250000 --seed 1 --vocab-scale 0.001 \
    --split train=0.8,valid=0.1,test=0.1 --out-dir "$data" --report
fi
rm -rf runs/demo/db runs/demo/best runs/demo/logs
echo "== maskps train configs/demo.yaml $*"
exec build/launcher/maskps train configs/demo.yaml "$@"
