#!/usr/bin/env bash
# Data-parallel scaling of BERT-large seq 128 (samples/s at 1, 2, 4, 8 GPUs, efficiency vs 1 GPU,
# overlap_comm off vs on): the `scaling` part of scripts/multi_gpu_check.sh (engine/comm/README.md).
# On one GPU it gives the 1-GPU baseline. Its logs stay in $BUILD/logs/multi_gpu (not in $OUT,
# whose file count is limited).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT='' exec bash scripts/multi_gpu_check.sh --part scaling --build-dir "${BUILD:-build-gpu}" "$@"
