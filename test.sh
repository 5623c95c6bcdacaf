#!/usr/bin/env bash
# The test command: installs what is missing, builds everything (Release, warnings as errors),
# runs ctest (labels cpu, gpu (skipped without a GPU), mpi) and prints its summary; then builds the
# config parser with ASan+UBSan and fuzzes it for DS_FUZZ_SECONDS (default 60) seconds.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/common.sh

ds_install_deps
ds_build build -DDS_WERROR=ON

ds_log "ctest (build/)"
status=0
ctest --test-dir build --output-on-failure -j2 --timeout 1800 || status=$?

ds_log "config parser with AddressSanitizer + UndefinedBehaviorSanitizer, and its fuzzer"
ds_build build-asan -DDS_CONFIG_ONLY=ON -DDS_SANITIZE=ON -DDS_FUZZ=ON -DDS_WERROR=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
ctest --test-dir build-asan --output-on-failure -j2 || status=$?
if [ -x build-asan/bin/ds_config_fuzz ]; then
  ds_log "fuzz the config parser for ${DS_FUZZ_SECONDS:-60} s (corpus: configs/)"
  mkdir -p build-asan/fuzz-corpus
  build-asan/bin/ds_config_fuzz -max_total_time="${DS_FUZZ_SECONDS:-60}" -timeout=10 \
    -print_final_stats=1 build-asan/fuzz-corpus configs/ 2>&1 | tail -n 25 || status=$?
fi

ds_log "summary"
ctest --test-dir build -N | tail -n 1
if [ $status -ne 0 ]; then echo "TESTS FAILED"; else echo "ALL TESTS PASSED"; fi
exit $status
