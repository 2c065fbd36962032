#!/usr/bin/env bash
# Dense training throughput of maskps's models beside PyTorch's, in one run
# (issue 3): bench_models and bench/torch_models.py alternate model by model,
# REPS times, and one Markdown table of medians is printed at the end.
#
#   bench/run_models.sh [BUILD_DIR] [REPS]     (defaults: build, 3)
#
# Environment: MODELS (dnn,dcnv2,edcn,sermasknet,paramasknet), BATCHES
# (4096,2048), THREADS (1,2), SECS per timing round (0.3), ROUNDS per
# process (3), ALL_SETTINGS=1 to also time PyTorch's default OpenMP setting,
# KEEP=DIR to keep the raw lines there. PyTorch runs only when Debian's
# python3-torch imports under /usr/bin/python3; the table then says "-".
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
reps=${2:-3}
models=${MODELS:-dnn,dcnv2,edcn,sermasknet,paramasknet}
batches=${BATCHES:-4096,2048}
threads=${THREADS:-1,2}
secs=${SECS:-0.3}
rounds=${ROUNDS:-3}
py=/usr/bin/python3
bin="$build/bench/bench_models"
[ -x "$bin" ] || { echo "run_models: no $bin (ninja -C $build bench_models)" >&2; exit 1; }

out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
: >"$out/maskps.tsv"
: >"$out/torch.tsv"
: >"$out/load.txt"
torch=0
if "$py" -c 'import torch' 2>/dev/null; then torch=1; fi

for ((rep = 1; rep <= reps; rep++)); do
  echo "rep $rep: $(uptime)" | tee -a "$out/load.txt" >&2
  for m in ${models//,/ }; do
    "$bin" -m "$m" -b "$batches" -t "$threads" -s "$secs" -r "$rounds" \
      | tee -a "$out/maskps.tsv" >&2
    if ((torch)); then
      "$py" bench/torch_models.py run -m "$m" -b "$batches" -t "$threads" \
        -s "$secs" -r "$rounds" -a "${ALL_SETTINGS:-0}" | tee -a "$out/torch.tsv" >&2
    fi
  done
done
echo "done:  $(uptime)" >>"$out/load.txt"

echo "Command: bench/run_models.sh $build $reps (MODELS=$models BATCHES=$batches" \
  "THREADS=$threads SECS=$secs ROUNDS=$rounds)"
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); git $(git rev-parse --short HEAD)"
simd="AVX2, no AVX-512"
if grep -qw avx512f /proc/cpuinfo; then simd="AVX-512"; fi
echo "Machine: $(lscpu | sed -n 's/^Model name: *//p') (family" \
  "$(lscpu | sed -n 's/^CPU family: *//p'), model $(lscpu | sed -n 's/^Model: *//p')), $(nproc) CPUs," \
  "$simd, $(lscpu | sed -n 's/^Hypervisor vendor: *//p') guest;" \
  "OpenBLAS $(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null)," \
  "PyTorch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)"
echo
"$py" bench/torch_models.py table "$out/maskps.tsv" "$out/torch.tsv"
echo
echo "Load (uptime) at each repetition:"
echo
sed 's/^/    /' "$out/load.txt"
[ -n "${KEEP:-}" ] || rm -rf "$out"
