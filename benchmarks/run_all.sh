#!/usr/bin/env bash
# Runs every benchmark under benchmarks/ (Python ones load $BUILD/lib/libds_torch.so), each writing
# its table to stdout and to $LOGS/<name>.txt. BENCH_FILTER (regex) selects by file name.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}; LOGS=${LOGS:-$BUILD/logs}; mkdir -p "$LOGS"
status=0
for b in benchmarks/bench_*.py benchmarks/bench_*.sh; do
  [ -f "$b" ] || continue
  name=$(basename "${b%.*}")
  if [ -n "${BENCH_FILTER:-}" ] && ! [[ $name =~ $BENCH_FILTER ]]; then continue; fi
  echo "== $name"
  case "$b" in
    *.py) DS_TORCH_LIB="$BUILD/lib/libds_torch.so" python3 "$b" 2>&1 | tee "$LOGS/$name.txt";;
    *.sh) BUILD="$BUILD" bash "$b" 2>&1 | tee "$LOGS/$name.txt";;
  esac
  [ ${PIPESTATUS[0]} -eq 0 ] || { echo "benchmark $name FAILED"; status=1; }
done
exit $status
