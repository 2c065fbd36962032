#!/usr/bin/env bash
# Installs, builds and runs every test of maskps:
#   1. the whole CTest suite on a normal build (build/);
#   2. the whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer
#      (build-asan/);
#   3. the wire-protocol decoder's libFuzzer target for a bounded time
#      (build-fuzz/; MASKPS_FUZZ_SECONDS, default 60).
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== build (RelWithDebInfo)"
scripts/setup.sh build
echo "== tests"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 900)

echo "== build (ASan + UBSan)"
scripts/setup.sh build-asan -DMASKPS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
echo "== tests under ASan + UBSan"
(cd build-asan &&
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j"$jobs" --timeout 1800)

echo "== fuzz (libFuzzer, ${MASKPS_FUZZ_SECONDS:-60} s per target)"
CC=clang scripts/setup.sh build-fuzz -DMASKPS_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug
for target in build-fuzz/fuzz/fuzz_*; do
  [ -x "$target" ] || continue
  name=$(basename "$target")
  corpus=$(mktemp -d)
  [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$corpus/"
  "$target" -max_total_time="${MASKPS_FUZZ_SECONDS:-60}" -print_final_stats=0 \
    "$corpus" 2>&1 | tail -n 3
  rm -rf "$corpus"
done
echo "== all tests passed"
