#!/usr/bin/env bash
# Dense training throughput of maskps's models beside PyTorch's on this
# machine, in one run (issue 3), as the Markdown section of BENCHMARKS.md.
#
#   bench/run_models.sh [BUILD_DIR] [REPS]     (defaults: build, 5)
#
# bench/torch_models.py compare drives bench_models -i and one PyTorch
# process per thread setting, alternating them round by round (REPS rounds
# per model, batch and thread count); the table gives per-case medians.
# Environment: MODELS (dnn,dcnv2,edcn,sermasknet,paramasknet), BATCHES
# (4096,2048), THREADS (1,2), SECS per round (0.3), ALL_SETTINGS=1 to also
# time PyTorch's default OpenMP setting (slow here), KEEP=DIR to keep the
# raw per-round lines. Without Debian's python3-torch (/usr/bin/python3)
# only maskps is timed and the PyTorch columns say "-".
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
reps=${2:-5}
models=${MODELS:-dnn,dcnv2,edcn,sermasknet,paramasknet}
batches=${BATCHES:-4096,2048}
threads=${THREADS:-1,2}
secs=${SECS:-0.3}
py=/usr/bin/python3
bin="$build/bench/bench_models"
[ -x "$bin" ] || { echo "run_models: no $bin (ninja -C $build bench_models)" >&2; exit 1; }

out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
start="$(date -u '+%Y-%m-%d %H:%M UTC'); $(uptime)"
rev=$(git rev-parse --short HEAD)
"$py" bench/torch_models.py compare "$bin" -m "$models" -b "$batches" \
  -t "$threads" -s "$secs" -r "$reps" -a "${ALL_SETTINGS:-0}" -o "$out"
end="$(date -u '+%H:%M UTC'); $(uptime)"

simd="AVX2, no AVX-512"
if grep -qw avx512f /proc/cpuinfo; then simd="AVX-512"; fi
echo "Command: \`bench/run_models.sh $build $reps\` (MODELS=$models" \
  "BATCHES=$batches THREADS=$threads SECS=$secs), at git $rev"
echo
echo "Machine: $(lscpu | sed -n 's/^Model name: *//p') (family" \
  "$(lscpu | sed -n 's/^CPU family: *//p'), model" \
  "$(lscpu | sed -n 's/^Model: *//p')), $(nproc) CPUs, $simd," \
  "$(lscpu | sed -n 's/^Hypervisor vendor: *//p') guest;" \
  "OpenBLAS $(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null)" \
  "(pthread), PyTorch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)"
echo
echo "Start: $start"
echo
echo "End: $end"
echo
"$py" bench/torch_models.py table "$out/maskps.tsv" "$out/torch.tsv"
echo
echo "Load average when each case started:"
echo
sed 's/^/    /' "$out/load.txt"
[ -n "${KEEP:-}" ] || rm -rf "$out"
