#!/bin/sh
# Warm start on NEW data (issue 6): the Criteo sample split by line order
# into an older part (the first OLD_PCT% of the lines) and a newer part (the
# rest). A fixed-D DNN trains on the old part; then an AMTL DNN trains on
# the new part, cold or warm-started from the old run's best tables
# (warm_start.tables; "+dense" also loads its dense checkpoint), for one
# epoch and to its best epoch (early stopping), over SEEDS. Each part is
# split 80/10/10 by configs/criteo.yaml's line hash, so the new part has its
# own validation and test rows. Also scores the old model on the new test
# rows without any retraining (maskps predict).
#
#   bench/run_warmstart_new.sh            # all runs, then the table
#
# Environment (defaults in brackets):
#   BUILD     build directory holding launcher/maskps [build-acc]
#   SEEDS     train.seed of the new runs [1 2 3]
#   OLD_PCT   percent of the lines (in file order) in the old part [70]
#   WARMUP    embedding.amtl_warmup_steps of the new runs [0]
#   DIR       data, run directories and results [runs/warm-new]
#
# The two parts are written to $DIR/data (runs/ is gitignored: the sample
# may not be copied into the repository). One run at a time (shared machine).
# Needs /usr/bin/python3 with python3-torch only for the split hash of the
# no-retraining score (bench/torch_train.py's split_part).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-acc}
SEEDS=${SEEDS:-1 2 3}
OLD_PCT=${OLD_PCT:-70}
WARMUP=${WARMUP:-0}
DIR=${DIR:-runs/warm-new}
SRC=../shared/data/criteo/criteo_sample.tsv
MASKPS=$BUILD/launcher/maskps
PY=/usr/bin/python3
mkdir -p "$DIR/data"
RAW=$DIR/raw.jsonl
: >"$RAW"

n=$(wc -l <"$SRC")
nold=$((n * OLD_PCT / 100))
head -n "$nold" "$SRC" >"$DIR/data/old.tsv"
tail -n +"$((nold + 1))" "$SRC" >"$DIR/data/new.tsv"
echo "$(date -u +%T) $n lines: old 1..$nold, new $((nold + 1))..$n" >&2

record() { # run_dir key
  $PY - "$1/logs/worker-0.jsonl" "$2" >>"$RAW" <<'EOF'
import json, sys
rec = {"key": sys.argv[2]}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("event") == "test" and r.get("epoch") == 1:
        rec["test_auc_epoch1"] = r["auc"]
    if r.get("event") == "done":
        rec.update(test_auc=r["test_auc"], test_logloss=r["test_logloss"],
                   valid_auc=r["valid_auc"], best_epoch=r["best_epoch"])
    elif r.get("event") == "storage":
        rec.update(rows=r["rows"], bytes_per_key=r["bytes_per_key"],
                   fixed_bytes_per_key=r["fixed_bytes_per_key"],
                   mean_prefix=r["mean_prefix"])
print(json.dumps(rec))
EOF
}

train() { # run_dir key data_file [--set ...]
  dir=$1 key=$2 data=$3
  shift 3
  rm -rf "$dir"
  echo "$(date -u +%T) $key" >&2
  if ! "$MASKPS" train configs/criteo.yaml --set model.name=dnn \
      --set "data.train=[$data]" --set "train.run_dir=$dir" \
      --set train.threads=1 --set log.progress=off --set log.level=warn \
      "$@" >"$dir.out" 2>&1; then
    echo "failed: $key (see $dir.out)" >&2
    tail -5 "$dir.out" >&2
    return 1
  fi
  record "$dir" "$key"
}

old=$DIR/old
train "$old" old "$DIR/data/old.tsv" --set train.seed=2024

# the old model on the new part's test rows, no retraining
"$MASKPS" predict "$old" "$DIR/data/new.tsv" >"$DIR/old-on-new.probs"
$PY - "$DIR/data/new.tsv" "$DIR/old-on-new.probs" >>"$RAW" <<'EOF'
import json, sys
sys.path.insert(0, "bench")
import torch
import torch_train as tt
key = tt.mix64((2024 ^ 0x5EED) & tt.M64)   # criteo.yaml's split_seed
probs = [float(x) for x in open(sys.argv[2])]
lines = open(sys.argv[1]).read().splitlines()
assert len(probs) == len(lines), (len(probs), len(lines))
s, y = [], []
for i, (line, p) in enumerate(zip(lines, probs)):
    if tt.split_part(i, key, 0.1, 0.1) == 2:
        s.append(p)
        y.append(float(line.split("\t", 1)[0]))
print(json.dumps({"key": "old-on-new-test", "rows": len(s),
                  "test_auc": tt.auc(torch.tensor(s), torch.tensor(y))}))
EOF

for seed in $SEEDS; do
  for ep in 1 30; do
    common="--set embedding.amtl=true --set embedding.amtl_warmup_steps=$WARMUP --set train.seed=$seed --set train.epochs=$ep"
    # shellcheck disable=SC2086
    train "$DIR/cold-$ep-$seed" "cold/$ep/$seed" "$DIR/data/new.tsv" $common
    # shellcheck disable=SC2086
    train "$DIR/warm-$ep-$seed" "warm/$ep/$seed" "$DIR/data/new.tsv" $common \
      --set "warm_start.tables=[$old/best/shard-0]"
    # shellcheck disable=SC2086
    train "$DIR/warmdense-$ep-$seed" "warm+dense/$ep/$seed" \
      "$DIR/data/new.tsv" $common \
      --set "warm_start.tables=[$old/best/shard-0]" \
      --set "warm_start.dense=$old/best/dense.bin"
  done
done

$PY - "$RAW" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
by = {r["key"]: r for r in runs}
old = by["old"]
print("old fixed-D DNN on the old part: test AUC %.4f (best epoch %d), "
      "%d rows, %.1f bytes/key" % (old["test_auc"], old["best_epoch"],
                                   old["rows"], old["bytes_per_key"]))
o = by["old-on-new-test"]
print("old model on the new part's %d test rows, no retraining: AUC %.4f"
      % (o["rows"], o["test_auc"]))
print()
print("| start | epochs | test AUC per seed | mean | best epoch | rows "
      "| bytes/key after | mean prefix |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for ep, label in (("1", "1"), ("30", "best (early stop)")):
    for start in ("cold", "warm", "warm+dense"):
        rs = [r for k, r in sorted(by.items())
              if k.startswith("%s/%s/" % (start, ep))]
        if not rs:
            continue
        aucs = [r["test_auc"] for r in rs]
        print("| %s | %s | %s | %.4f | %s | %s | %s | %s |" % (
            start, label, " ".join("%.4f" % a for a in aucs),
            sum(aucs) / len(aucs),
            " ".join(str(r["best_epoch"]) for r in rs),
            " ".join(str(r["rows"]) for r in rs),
            " ".join("%.1f" % r["bytes_per_key"] for r in rs),
            " ".join("%.2f" % r["mean_prefix"] for r in rs)))
EOF
