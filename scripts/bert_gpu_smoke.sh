#!/usr/bin/env bash
# Quick GPU check of bert_pretrain (one process, one GPU): BERT-large seq 128 bf16 micro-batch 64 with
# the plain layer, the transformer kernel and sparse attention, STEPS optimizer steps each, one
# checkpoint at the end. Needs seq-128 shards under data/shards/seq128 (examples/bing_bert/fetch_data.sh).
#   BUILD=build-gpu STEPS=30 scripts/bert_gpu_smoke.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}; STEPS=${STEPS:-30}; MODEL=${MODEL:-configs/bert_large.json}
W=$BUILD/bert_smoke; rm -rf "$W"; mkdir -p "$W"
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
base = json.load(open("configs/ds_bert_seq128_bf16.json"))
base["train_batch_size"] = 64  # one GPU, no accumulation
for name, extra in {"plain": {}, "kernel": {"transformer_kernel": {"enabled": True, "pre_layer_norm": True}},
                    "sparse": {"sparse_attention": {"mode": "fixed", "block": 16, "num_local_blocks": 4,
                                                    "num_global_blocks": 1, "attention": "bidirectional"}}}.items():
    c = dict(base); c.update(extra)
    json.dump(c, open(f"{w}/ds_{name}.json", "w"), indent=1)
PY
status=0
for v in ${VARIANTS:-plain kernel sparse}; do
  echo "== bert_pretrain $MODEL, $v, $STEPS steps"
  "$BUILD/bin/bert_pretrain" --cf "$MODEL" --deepspeed_config "$W/ds_$v.json" --max_seq_length 128 \
    --max_predictions_per_seq 20 --output_dir "$W/out_$v" --job_name "$v" --data_path_prefix data \
    --max_steps "$STEPS" --print_steps 5 --seed 1 --lr_schedule LE 2>&1 | tail -n 14
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "bert_pretrain ($v) FAILED"; status=1; }
done
exit $status
