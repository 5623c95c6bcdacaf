#!/usr/bin/env bash
# The one command for the GPU side. On a machine with a GPU and the Python torch (CUDA):
# configures build-gpu/ with CUDA on, builds with all cores, runs the `gpu` tests and, with --bench,
# the benchmarks under benchmarks/. Logs and results go to $OUT when set, else build-gpu/logs.
#
#   scripts/gpu_check.sh [--bench] [--bench-filter REGEX] [--tests REGEX] [--all-labels] [--no-tests]
#                        [--run 'cmd'] [--build-dir DIR] [--targets 'T1 T2 ...']
#   --bench            run benchmarks/run_all.sh (every benchmark) after the tests
#   --bench-filter RE  only the benchmarks whose file name matches RE
#   --tests RE         only ctest tests matching RE
#   --all-labels       run every ctest label (cpu, gpu, mpi), not only gpu
#   --run 'cmd'        run an extra command after the build (in the repo root, build dir in $BUILD)
#   --targets 'T ...'  build only these targets (a quick check of one part; pair with --tests)
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=build-gpu
BENCH=0; BENCH_FILTER=""; TESTS=""; LABELS="-L gpu"; RUN_TESTS=1; EXTRA=(); TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bench) BENCH=1;;
    --bench-filter) BENCH=1; BENCH_FILTER=$2; shift;;
    --tests) TESTS=$2; shift;;
    --all-labels) LABELS="";;
    --no-tests) RUN_TESTS=0;;
    --run) EXTRA+=("$2"); shift;;
    --build-dir) BUILD=$2; shift;;
    --targets) read -r -a TARGETS <<< "$2"; shift;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2;;
  esac
  shift
done
LOGS=${OUT:-$BUILD/logs}
mkdir -p "$LOGS"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOGS/device.txt"

# Header-only packages the GPU machine may lack travel in .deps/ (apt-get download here, dpkg -x there).
if [ ! -f /usr/include/CLI/CLI.hpp ] && [ ! -f .deps/cli11/usr/include/CLI/CLI.hpp ]; then
  for deb in .deps/libcli11-dev_*.deb; do [ -f "$deb" ] && dpkg -x "$deb" .deps/cli11; done
fi

TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
t0=$(date +%s)
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DDS_WITH_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DDS_TORCH_PYTHON="$(command -v python3)" \
  -DCMAKE_CUDA_ARCHITECTURES="${DS_CUDA_ARCHS:-90a}" 2>&1 | tee "$LOGS/configure.log" | grep -A30 "==== deepspeed_cpp"
targets=(); [ ${#TARGETS[@]} -gt 0 ] && targets=(--target "${TARGETS[@]}")
cmake --build "$BUILD" -j"$(nproc)" "${targets[@]}" > "$LOGS/build.log" 2>&1
rc=$?
echo "build: rc=$rc in $(( $(date +%s) - t0 )) s"
if [ $rc -ne 0 ]; then grep -E "error|Error" -A3 "$LOGS/build.log" | head -80; exit $rc; fi

status=0
if [ $RUN_TESTS = 1 ]; then
  args=($LABELS); [ -n "$TESTS" ] && args+=(-R "$TESTS")
  ctest --test-dir "$BUILD" "${args[@]}" --output-on-failure --timeout 900 > "$LOGS/ctest.log" 2>&1 || status=$?
  grep -E "tests passed|tests failed|Failed|\*\*\*|Passed|Skipped|Not Run" "$LOGS/ctest.log" | tail -60
fi
export BUILD
for cmd in "${EXTRA[@]}"; do
  echo "== $cmd"; bash -c "$cmd" 2>&1 | tee -a "$LOGS/run.log"; [ ${PIPESTATUS[0]} -eq 0 ] || status=1
done
if [ $BENCH = 1 ]; then
  BUILD="$BUILD" BENCH_FILTER="$BENCH_FILTER" LOGS="$LOGS" bash benchmarks/run_all.sh || status=1
fi
echo "gpu_check: status=$status"
exit $status
