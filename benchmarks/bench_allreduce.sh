#!/usr/bin/env bash
# NCCL all-reduce bus bandwidth (1 MB - 1 GB, nccl-tests style with a #wrong check) and data-parallel
# step time with / without overlap_comm, one rank per local GPU under mpirun, NVLink multicast off
# (NCCL_NVLS_ENABLE=0). On one GPU it runs too (busbw 0: nothing crosses a link); issue 13 runs it on
# 2-8 GPUs. Arguments go to bench_allreduce (--help: sizes, dtype, model size, --ref-busbw).
#   BUILD=build-gpu NGPUS=8 benchmarks/bench_allreduce.sh --dtype bfloat16
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
BIN=$BUILD/bin/bench_allreduce
if [ ! -x "$BIN" ]; then
  echo "bench_allreduce.sh: $BIN is not built (it needs a CUDA build: scripts/gpu_check.sh)" >&2
  exit 1
fi
if [ -z "${NGPUS:-}" ]; then
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    NGPUS=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
  else
    NGPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  fi
fi
if [ "${NGPUS:-0}" -lt 1 ]; then
  echo "bench_allreduce.sh: no GPU found (set NGPUS, or run $BIN --cpu under mpirun for the MPI backend)" >&2
  exit 1
fi
export NCCL_NVLS_ENABLE=0
args=(-n "$NGPUS" --bind-to none)
[ "$(id -u)" = 0 ] && args+=(--allow-run-as-root)
for v in $(compgen -e | grep -E '^(NCCL_|CUDA_VISIBLE_DEVICES$|DS_COMM_TIMEOUT_S$)' || true); do args+=(-x "$v"); done
echo "# mpirun ${args[*]} $BIN $*"
exec mpirun "${args[@]}" "$BIN" "$@"
