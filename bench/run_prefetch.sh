#!/usr/bin/env bash
# The pull overlap (train.prefetch) of async mode on a local cluster (2
# pservers + 1 worker) on the demo (configs/demo.yaml; data from
# scripts/demo.sh), against the same cluster without it and embedded mode
# (async too: the same arithmetic, no network). Runs alternate round by
# round because the machine is shared; each prints its samples/s and the
# mean milliseconds per step spent reading (waiting for the reader thread),
# pulling (sending, then collecting what is not in yet), computing and
# pushing (train records of run_dir/logs/worker-0.jsonl, the first record
# skipped as warm-up). The runs are bench/run_cluster.sh's, in async mode.
#
#   bench/run_prefetch.sh [BUILD_DIR [ROUNDS [STEPS [--set k=v ...]]]]
#                                     (default build 4 50; the --set options
#                                      go to every run, e.g. a lighter model
#                                      whose step is less compute-bound:
#                                      --set model.name=dnn
#                                      --set model.hidden_units=[64])
set -euo pipefail
MODE=${MODE:-async} VARIANTS=${VARIANTS:-embedded overlap serial} \
  exec "$(dirname "$0")/run_cluster.sh" "$@"
