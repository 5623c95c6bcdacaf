#!/usr/bin/env bash
# The main job. Installs what is missing, builds Release into build/, then runs it.
# (Until the BERT recipe lands, the main job validates every DeepSpeed config in configs/.)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/common.sh

ds_install_deps
ds_build build

ds_log "validate configs/*.json with build/bin/ds_config"
fail=0
for f in configs/*.json; do
  case "$f" in configs/bert_*.json) continue;; esac   # model configs, not DeepSpeed configs
  if build/bin/ds_config "$f" >/dev/null; then echo "ok    $f"; else echo "FAIL  $f"; fail=1; fi
done
exit $fail
