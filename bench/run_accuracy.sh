#!/bin/sh
# Accuracy evidence for issue 5: trains each model of the table with
# `maskps train` (embedded mode) and with the PyTorch reference
# (bench/torch_train.py: same rows, split, features, admission, init rules,
# optimizers, schedule), three seeds each, optionally with AMTL on the maskps
# side, and writes the table (mean +- sd over seeds).
#
#   bench/run_accuracy.sh                 # everything below, then the table
#   bench/run_accuracy.sh --table         # only (re)write the table
#
# Environment (defaults in brackets):
#   BUILD     build directory holding launcher/maskps [build-acc]
#   DATASETS  [criteo frappe]   (configs/<name>.yaml)
#   MODELS    [dnn dcnv2 edcn sermasknet paramasknet]
#   SEEDS     [1 2 3]           (train.seed; the split keeps data.split_seed)
#   AMTL      1 = also train maskps with embedding.amtl [1]
#   AMTL_SEEDS  the seeds of the AMTL runs [$SEEDS]
#   THREADS   compute threads of each run [1]
#   RAW       one JSON object per finished run; runs already in it are
#             skipped, so an interrupted sweep resumes [runs/accuracy/raw.jsonl]
#   OUT       the table [bench/results/accuracy-<UTC date>.md]; text below
#             a line "<!-- notes: kept by run_accuracy.sh -->" in an existing
#             OUT is kept when the tables are rewritten
#
# Runs one training at a time (the machine is shared). Needs python3-torch.
# Run from anywhere; it works from the repository root, where the configs'
# relative data paths (../shared/data/...) resolve.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-acc}
DATASETS=${DATASETS:-criteo frappe}
MODELS=${MODELS:-dnn dcnv2 edcn sermasknet paramasknet}
SEEDS=${SEEDS:-1 2 3}
AMTL=${AMTL:-1}
AMTL_SEEDS=${AMTL_SEEDS:-$SEEDS}
THREADS=${THREADS:-1}
RAW=${RAW:-runs/accuracy/raw.jsonl}
OUT=${OUT:-bench/results/accuracy-$(date -u +%Y-%m-%d).md}
PY=/usr/bin/python3
MASKPS=$BUILD/launcher/maskps
mkdir -p "$(dirname "$RAW")" "$(dirname "$OUT")"
touch "$RAW"

# AMTL may shrink rows after about one epoch (steps per epoch at the
# configs' batch sizes: Criteo 9289/256 -> 37, Frappe 46.2k/1024 -> 46).
amtl_warmup() {
  case $1 in criteo) echo 37 ;; frappe) echo 46 ;; *) echo 100 ;; esac
}

have() { # dataset model seed system
  grep -q "\"key\": \"$1/$2/$3/$4\"" "$RAW"
}

# maskps run -> one JSON line from its run directory's worker log
run_maskps() { # dataset model seed system [--set ...]
  ds=$1 model=$2 seed=$3 sys=$4
  shift 4
  dir=runs/accuracy/$ds-$model-$seed-$sys
  rm -rf "$dir"
  t0=$(date +%s)
  if ! "$MASKPS" train "configs/$ds.yaml" --set "model.name=$model" \
      --set "train.seed=$seed" --set "train.run_dir=$dir" \
      --set "train.threads=$THREADS" --set log.progress=off \
      --set log.level=warn "$@" >"$dir.out" 2>&1; then
    echo "maskps failed: $ds $model $seed $sys (see $dir.out)" >&2
    tail -5 "$dir.out" >&2
    return 1
  fi
  t1=$(date +%s)
  $PY - "$dir/logs/worker-0.jsonl" "$ds/$model/$seed/$sys" $((t1 - t0)) \
      >>"$RAW" <<'EOF'
import json, sys
rec = {"key": sys.argv[2], "seconds": float(sys.argv[3]), "curve": []}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("event") == "valid":
        rec["curve"].append({"epoch": r["epoch"], "valid_auc": r["auc"],
                             "valid_logloss": r["logloss"], "lr": r["lr"],
                             "lr_scale": r.get("lr_scale")})
    elif r.get("event") == "done":
        rec.update(test_auc=r["test_auc"], test_logloss=r["test_logloss"],
                   valid_auc=r["valid_auc"], best_epoch=r["best_epoch"],
                   steps=r["steps"])
    elif r.get("event") == "storage":
        rec.update(bytes_per_key=r["bytes_per_key"],
                   fixed_bytes_per_key=r["fixed_bytes_per_key"],
                   mean_prefix=r["mean_prefix"], rows=r["rows"])
print(json.dumps(rec))
EOF
}

run_torch() { # dataset model seed
  out=$($PY bench/torch_train.py "configs/$1.yaml" --set "model.name=$2" \
    --set "train.seed=$3" --threads "$THREADS" --json)
  printf '%s\n' "$out" | $PY -c '
import json, sys
r = json.loads(sys.stdin.read())
r["key"] = sys.argv[1]
print(json.dumps(r))' "$1/$2/$3/torch" >>"$RAW"
}

if [ "${1:-}" != "--table" ]; then
  for ds in $DATASETS; do
    for model in $MODELS; do
      for seed in $SEEDS; do
        if ! have "$ds" "$model" "$seed" maskps; then
          echo "$(date -u +%T) maskps $ds $model seed $seed" >&2
          run_maskps "$ds" "$model" "$seed" maskps
        fi
        if ! have "$ds" "$model" "$seed" torch; then
          echo "$(date -u +%T) torch  $ds $model seed $seed" >&2
          run_torch "$ds" "$model" "$seed"
        fi
        case " $AMTL_SEEDS " in *" $seed "*) want_amtl=$AMTL ;; *) want_amtl=0 ;; esac
        if [ "$want_amtl" = 1 ] && ! have "$ds" "$model" "$seed" amtl; then
          echo "$(date -u +%T) amtl   $ds $model seed $seed" >&2
          run_maskps "$ds" "$model" "$seed" amtl --set embedding.amtl=true \
            --set "embedding.amtl_warmup_steps=$(amtl_warmup "$ds")"
        fi
      done
    done
  done
fi

$PY - "$RAW" "$OUT" <<'EOF'
import json, math, subprocess, sys, time
raw, out = sys.argv[1], sys.argv[2]
runs = {}
for line in open(raw):
    r = json.loads(line)
    ds, model, seed, sysname = r["key"].split("/")
    runs.setdefault((ds, model, sysname), {})[seed] = r

def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, 0
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) \
        if len(xs) > 1 else float("nan")
    return m, sd, len(xs)

def ms(xs, fmt="%.4f"):
    m, sd, n = stats(xs)
    if m is None:
        return "-"
    return (fmt + " ± " + fmt) % (m, sd) if n > 1 else fmt % m

order = ["dnn", "dcnv2", "edcn", "sermasknet", "paramasknet"]
names = {"dnn": "DNN", "dcnv2": "DCNv2", "edcn": "EDCN",
         "sermasknet": "SerMaskNet", "paramasknet": "ParaMaskNet"}
datasets = []
for ds, _, _ in runs:
    if ds not in datasets:
        datasets.append(ds)
try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
except OSError:
    rev = "?"
L = []
L.append("# Accuracy: maskps vs the PyTorch reference (%s)\n"
         % time.strftime("%Y-%m-%d", time.gmtime()))
L.append("Written by `bench/run_accuracy.sh` at commit %s; raw runs in `%s`."
         % (rev, raw))
L.append("Test AUC / logloss at the best validation epoch, mean ± sample sd "
         "over the seeds (n = seeds). Δ = maskps − PyTorch of the means; "
         "\"paired sd\" is the sd of the per-seed differences.\n")
L.append("| dataset | model | n | maskps AUC | PyTorch AUC | Δ AUC | paired sd "
         "| maskps logloss | PyTorch logloss | best epoch (maskps / torch) |")
L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for ds in datasets:
    for model in order:
        a = runs.get((ds, model, "maskps"), {})
        b = runs.get((ds, model, "torch"), {})
        if not a and not b:
            continue
        seeds = sorted(set(a) & set(b))
        da = [a[s]["test_auc"] - b[s]["test_auc"] for s in seeds]
        ma, _, _ = stats([r["test_auc"] for r in a.values()])
        mb, _, _ = stats([r["test_auc"] for r in b.values()])
        dm, dsd, _ = stats(da)
        L.append("| %s | %s | %d / %d | %s | %s | %s | %s | %s | %s | %s |" % (
            ds, names[model], len(a), len(b),
            ms([r["test_auc"] for r in a.values()]),
            ms([r["test_auc"] for r in b.values()]),
            "%+.4f" % (ma - mb) if ma is not None and mb is not None else "-",
            "%.4f" % dsd if dsd is not None and not math.isnan(dsd) else "-",
            ms([r["test_logloss"] for r in a.values()]),
            ms([r["test_logloss"] for r in b.values()]),
            "%s / %s" % (ms([r["best_epoch"] for r in a.values()], "%.1f"),
                         ms([r["best_epoch"] for r in b.values()], "%.1f"))))
amtl_rows = [(ds, m) for ds in datasets for m in order
             if runs.get((ds, m, "amtl"))]
if amtl_rows:
    L.append("\n## AMTL (maskps, embedding.amtl) beside the same runs "
             "without it\n")
    L.append("Bytes per key: the embedding table's stored bytes (row header, "
             "values and per-row Adam state) over its rows at the end of "
             "training, as `maskps train` reports them; \"fixed D\" is the "
             "same table without AMTL.\n")
    L.append("| dataset | model | n | AUC without | AUC with AMTL | Δ AUC "
             "| logloss with AMTL | bytes/key fixed D | bytes/key AMTL "
             "| saving | mean prefix |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
             "| --- |")
    for ds, m in amtl_rows:
        a = runs.get((ds, m, "maskps"), {})
        c = runs[(ds, m, "amtl")]
        ma, _, _ = stats([r["test_auc"] for r in a.values()])
        mc, _, _ = stats([r["test_auc"] for r in c.values()])
        fb, _, _ = stats([r.get("bytes_per_key") for r in a.values()])
        cb, _, _ = stats([r.get("bytes_per_key") for r in c.values()])
        L.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            ds, names[m], len(c),
            ms([r["test_auc"] for r in a.values()]),
            ms([r["test_auc"] for r in c.values()]),
            "%+.4f" % (mc - ma) if ma is not None else "-",
            ms([r["test_logloss"] for r in c.values()]),
            "%.1f" % fb if fb is not None else "-",
            ms([r.get("bytes_per_key") for r in c.values()], "%.1f"),
            "%.1f%%" % (100 * (1 - cb / fb)) if fb and cb else "-",
            ms([r.get("mean_prefix") for r in c.values()], "%.2f")))
# hand-written notes below the marker survive a rewrite of the tables
MARK = "<!-- notes: kept by run_accuracy.sh -->"
notes = ""
try:
    old = open(out).read()
    if MARK in old:
        notes = "\n" + old[old.index(MARK):]
except OSError:
    pass
open(out, "w").write("\n".join(L) + "\n" + notes)
print("\n".join(L))
EOF
