#!/usr/bin/env bash
# The main job: install what is missing, build Release into build/, fetch the default data, then
# pretrain BERT with the bing_bert recipe (examples/bing_bert/README.md):
#   no GPU:   bert_tiny on NUM_PROCS CPU ranks (dsrun --num_procs, default 2), seq 128, STEPS steps (300)
#   GPUs:     bert_base on every local GPU (dsrun --num_gpus N), seq 128, bf16, STEPS steps (1000)
# Settings (environment): OUT (out), STEPS, NUM_PROCS, PRINT_STEPS (20 CPU / 50 GPU), DS_BUILD_DIR (build).
# It prints where the checkpoints, the log and the loss curve are, and the loss at the start and end.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/common.sh

ds_install_deps
BUILD=${DS_BUILD_DIR:-build}
ds_build "$BUILD"

ds_log "data: examples/bing_bert/fetch_data.sh (each step skipped when its output exists)"
BUILD_DIR="$(cd "$BUILD" && pwd)" examples/bing_bert/fetch_data.sh

OUT=${OUT:-out}
gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi

if [ "$gpus" -gt 0 ]; then
  job=bert_base_seq128
  steps=${STEPS:-1000}
  launch=("$BUILD/bin/dsrun" --num_gpus "$gpus")
  recipe=(--cf configs/bert_base.json --deepspeed_config configs/ds_bert_base_gpu.json --lr_schedule LE
          --print_steps "${PRINT_STEPS:-50}")
  what="bert_base on $gpus GPU(s)"
else
  job=bert_tiny_seq128
  steps=${STEPS:-300}
  procs=${NUM_PROCS:-2}
  launch=("$BUILD/bin/dsrun" --num_procs "$procs")
  # mpirun refuses more ranks than cores unless told to oversubscribe.
  if [ "$(nproc 2>/dev/null || echo 1)" -lt "$procs" ]; then launch+=(--launcher_args=--oversubscribe); fi
  recipe=(--cf configs/bert_tiny.json --deepspeed_config configs/ds_bert_tiny_cpu.json --lr_schedule EE
          --print_steps "${PRINT_STEPS:-20}")
  what="bert_tiny on $procs CPU rank(s)"
fi

# A fresh run each time: the job's old checkpoints and curves would mix with the new ones.
rm -rf "$OUT/saved_models/$job" "$OUT/runs/$job"
mkdir -p "$OUT/logs"
log="$OUT/logs/$job.log"
ds_log "pretrain $what: seq 128, $steps steps -> $OUT (log $log)"
start=$(date +%s)
"${launch[@]}" "$BUILD/bin/bert_pretrain" "${recipe[@]}" --max_seq_length 128 --max_predictions_per_seq 20 \
  --output_dir "$OUT" --job_name "$job" --data_path_prefix data --validation_data_path_prefix data \
  --max_steps "$steps" --seed 42 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
elapsed=$(( $(date +%s) - start ))
[ "$status" = 0 ] || { echo "run.sh: bert_pretrain failed (exit $status); see $log" >&2; exit "$status"; }

csv="$OUT/runs/$job/train.csv"
ds_log "done in ${elapsed} s"
# Mean loss of the first and last 20 optimizer steps (train.csv: step,sample_count,loss,lr).
awk -F, 'NR > 1 { loss[++n] = $3 }
  END { if (n < 2) exit; k = n < 40 ? int(n / 2) : 20; a = 0; b = 0
        for (i = 1; i <= k; i++) { a += loss[i]; b += loss[n - k + i] }
        printf "loss: %.3f (mean of steps 1-%d) -> %.3f (steps %d-%d)\n", a / k, k, b / k, n - k + 1, n }' "$csv"
grep '^validation:' "$log" | tail -1 || true
latest="$OUT/saved_models/$job/$(cat "$OUT/saved_models/$job/latest")"
echo "checkpoint:  $latest"
echo "log:         $log"
echo "loss curve:  $csv (validation: $OUT/runs/$job/validation.csv)"
