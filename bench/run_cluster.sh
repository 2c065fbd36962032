#!/usr/bin/env bash
# Throughput of a local cluster (2 pservers + 1 worker) against embedded
# mode on the demo (configs/demo.yaml; data from scripts/demo.sh), runs
# alternated round by round because the machine is shared: prints each
# run's samples/s and the mean milliseconds per step spent reading (waiting
# for the reader thread), pulling, computing and pushing (train records of
# run_dir/logs/worker-0.jsonl, the first record skipped as warm-up).
#
#   bench/run_cluster.sh [BUILD_DIR [ROUNDS [STEPS [--set k=v ...]]]]
#                                     (default build 4 50; the --set options
#                                      go to every run)
#
# Environment: MODE, the train.mode of every run [sync]; VARIANTS, the runs
# of a round in order [embedded cluster]: embedded (one process), cluster
# (2 pservers + 1 worker), and for the pull overlap of async/ssp modes
# (bench/run_prefetch.sh) overlap / serial (the cluster with
# train.prefetch true / false).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build} rounds=${2:-4} steps=${3:-50}
shift $(($# < 3 ? $# : 3))
mode=${MODE:-sync}
variants=${VARIANTS:-embedded cluster}
[ -s runs/demo/data/train.tsv ] || {
  echo "no runs/demo/data: run scripts/demo.sh once" >&2
  exit 2
}
out=$(mktemp -d /tmp/maskps-bench-cluster-XXXXXX)
for r in $(seq "$rounds"); do
  for variant in $variants; do
    run=$out/$variant-$r
    extra=()
    case $variant in
    embedded) ;;
    cluster) extra=(--set cluster.pservers=2) ;;
    overlap) extra=(--set cluster.pservers=2 --set train.prefetch=true) ;;
    serial) extra=(--set cluster.pservers=2 --set train.prefetch=false) ;;
    *) echo "run_cluster: unknown variant '$variant'" >&2; exit 2 ;;
    esac
    "$build/launcher/maskps" train configs/demo.yaml --set train.run_dir="$run" \
      --set train.mode="$mode" --set cluster.workers=1 \
      --set train.max_steps="$steps" --set data.valid=[] --set log.progress=off \
      --set log.interval_s=3 --set log.jsonl=true "${extra[@]}" "$@" \
      >"$run.out" 2>"$run.err"
    python3 - "$variant" "$r" "$run" <<'PY'
import json, sys
variant, r, run = sys.argv[1:]
recs = [json.loads(l) for l in open(run + "/logs/worker-0.jsonl")]
done = [x for x in recs if x["event"] == "done"][-1]
tr = [x for x in recs if x["event"] == "train"]
tr = tr[1:] or tr
avg = lambda k: sum(x[k] for x in tr) / len(tr) if tr else float("nan")
print(f"{variant:8s} round {r}: {done['samples_per_s']:7.0f} samples/s  "
      f"read {avg('read_ms'):5.1f}  pull {avg('pull_ms'):6.1f}  "
      f"compute {avg('compute_ms'):6.1f}  push {avg('push_ms'):6.1f} ms/step")
PY
  done
done
rm -rf "$out"
