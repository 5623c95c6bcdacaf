#!/usr/bin/env bash
# Issue 13 in one command: data parallelism on N GPUs of one host (NCCL), with a summary table.
#
#   scripts/multi_gpu_check.sh [--ngpus N] [--part all|build|tests|allreduce|scaling|faults[,...]]
#                              [--budget SECONDS] [--build-dir DIR] [--cpu-dry]
#   tests      the mpi ctest tests and the multi-rank gpu tests with N ranks (NCCL on N GPUs); the
#              mpi tests that start their own 2-rank CPU jobs only with --cpu-dry or MGC_ALL_MPI=1
#   allreduce  bus bandwidth of our NCCL communicator, 1 MB - 1 GB, against 370 GB/s (goal >= 90%)
#   scaling    samples/s of BERT-large seq 128 at 1, 2, 4, 8 GPUs (goal: >= 95% efficiency at the
#              largest), overlap_comm off vs on: dsrun + bert_pretrain when it runs data-parallel and
#              finds shards, else bench_allreduce's BERT-large stand-in (said so in the table)
#   faults     weights bitwise equal on all ranks after 100 steps (bf16, fp16); kill -9 of one rank
#              mid-run ends the job non-zero, fast, with no rank left behind
#   --budget   seconds for the whole run (default 570: one 10-minute device call); a part that
#              cannot finish in what is left is listed as not run
#   --cpu-dry  the same control flow with CPU ranks (MPI backend, tiny sizes) in build/ (default N 2)
# Environment: DS_BERT_DATA (bert_pretrain --data_path_prefix, default data: shards from
# examples/bing_bert/fetch_data.sh, made on a machine with network and carried), MGC_BERT_MODEL,
# MGC_BERT_DS_CONFIG, MGC_MICRO (micro-batch per GPU, 64), MGC_STEPS (BERT steps, 40),
# MGC_RANK_TESTS (more gtest binaries that run as N ranks). Logs: $OUT (or BUILD/logs/multi_gpu).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
NGPUS=""; PART=all; DRY=0; BUDGET=570; BUILD=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ngpus) NGPUS=$2; shift;;
    --part) PART=$2; shift;;
    --budget) BUDGET=$2; shift;;
    --build-dir) BUILD=$2; shift;;
    --cpu-dry) DRY=1;;
    -h|--help) sed -n '2,22p' "$0"; exit 0;;
    *) echo "multi_gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2;;
  esac
  shift
done
for p in ${PART//,/ }; do case "$p" in build|tests|allreduce|scaling|faults|all) ;; *)
  echo "multi_gpu_check.sh: --part $p: use build, tests, allreduce, scaling, faults or all (comma-separated)" >&2
  exit 2;; esac; done

# NVLink multicast can take the host's shared GPUs out of service: off in every process.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export DS_COMM_TIMEOUT_S=${DS_COMM_TIMEOUT_S:-120} PYTHONUNBUFFERED=1 GTEST_COLOR=no
T0=$(date +%s)
if [ $DRY = 1 ]; then
  BUILD=${BUILD:-build}; NGPUS=${NGPUS:-2}; DEV=cpu; export OMP_NUM_THREADS=1
  MODEL=${MGC_BERT_MODEL:-configs/bert_tiny.json}; DSCFG=${MGC_BERT_DS_CONFIG:-configs/ds_bert_tiny_cpu.json}
  MICRO=${MGC_MICRO:-4}; STEPS=${MGC_STEPS:-12}
else
  BUILD=${BUILD:-build-gpu}; DEV=cuda
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then VISIBLE=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
  else VISIBLE=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); fi
  NGPUS=${NGPUS:-$VISIBLE}
  [ "$NGPUS" -le "$VISIBLE" ] || { echo "multi_gpu_check.sh: --ngpus $NGPUS, but $VISIBLE GPU(s) visible" >&2; exit 2; }
  MODEL=${MGC_BERT_MODEL:-configs/bert_large.json}; DSCFG=${MGC_BERT_DS_CONFIG:-configs/ds_bert_seq128_bf16.json}
  MICRO=${MGC_MICRO:-64}; STEPS=${MGC_STEPS:-40}
fi
N=$NGPUS; BIN=$BUILD/bin; DATA=${DS_BERT_DATA:-data}
LOGDIR=$BUILD/logs/multi_gpu; mkdir -p "$LOGDIR"; SUMMARY=$LOGDIR/summary.tsv; : >"$SUMMARY"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/mgc.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
[ "${N:-0}" -ge 1 ] 2>/dev/null || { echo "multi_gpu_check.sh: no GPU found (--ngpus N, or --cpu-dry)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "multi_gpu_check.sh: mpirun not found (OpenMPI)" >&2; exit 1; }

MPI=(mpirun --bind-to none --mca btl ^openib)
[ "$(id -u)" = 0 ] && MPI+=(--allow-run-as-root)
[ $DRY = 1 ] && MPI+=(--oversubscribe)
for v in $(compgen -e | grep -E '^(NCCL_|DS_COMM_TIMEOUT_S$|GTEST_COLOR$|TORCH_SYMM_MEM_DISABLE_MULTICAST$|NVSHMEM_DISABLE_NVLS$|OMP_NUM_THREADS$)'); do
  MPI+=(-x "$v")
done
# dsrun forwards NCCL_* itself; the other two variables reach its ranks through an env file.
printf 'TORCH_SYMM_MEM_DISABLE_MULTICAST=1\nNVSHMEM_DISABLE_NVLS=1\n' >"$SCRATCH/ds_env"
[ -n "${OMP_NUM_THREADS:-}" ] && echo "OMP_NUM_THREADS=$OMP_NUM_THREADS" >>"$SCRATCH/ds_env"
export DS_ENV_FILE=$SCRATCH/ds_env

say() { printf '%s\n' "$*"; }
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
# guard DEFAULT: a command's time limit, never past the budget
guard() { local l; l=$(( $(left) - 5 )); [ "$l" -lt "$1" ] && echo $(( l > 10 ? l : 10 )) || echo "$1"; }
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$SUMMARY"; }   # part, what, figure, goal, status
goal_ge() { awk -v x="$1" -v g="$2" 'BEGIN { print (x + 0 >= g + 0) ? "met" : "MISSED" }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Everything so far into $OUT (at most 8 files come back: the summary and one tarball).
save_logs() {
  [ -n "${OUT:-}" ] || return 0
  cp "$LOGDIR/summary.txt" "$OUT/multi_gpu_summary.txt" 2>/dev/null
  tar -czf "$OUT/multi_gpu_logs.tgz" -C "$BUILD/logs" multi_gpu 2>/dev/null
}
# run LOG LIMIT CMD...: the command under a hard time limit (it and its children), output to LOG.
run() { local log=$1 lim=$2; shift 2; echo "# $*" >"$log"; timeout -k 10 "$lim" "$@" >>"$log" 2>&1; }
# PIDs of live processes started with MGC_TAG=$1 (and, with $2, OMPI_COMM_WORLD_RANK=$2).
tagged_pids() {
  local e env_of
  for e in /proc/[0-9]*/environ; do
    env_of=$(tr '\0' '\n' 2>/dev/null <"$e") || continue
    grep -qx "MGC_TAG=$1" <<<"$env_of" || continue
    [ -z "${2:-}" ] || grep -qx "OMPI_COMM_WORLD_RANK=$2" <<<"$env_of" || continue
    e=${e#/proc/}; echo "${e%/environ}"
  done | sort -n
}
need() { # PART SECONDS: enough budget left?
  if [ "$(left)" -lt "$2" ]; then row "$1" "(whole part)" "-" "-" "not run: $(left) s of the budget left, needs ~$2"
    say "== $1: not run ($(left) s left, needs ~$2)"; return 1; fi
  say "== $1 ($(elapsed) s elapsed)"
}

part_build() {
  local log=$LOGDIR/build.log j; j=$(nproc)
  if [ $DRY = 0 ] && [ ! -f "$BUILD/CMakeCache.txt" ]; then
    say "build: $BUILD is not configured; scripts/gpu_check.sh --no-tests (configure and build everything)"
    bash scripts/gpu_check.sh --no-tests --build-dir "$BUILD" >"$log" 2>&1 || { tail -30 "$log"; return 1; }
  fi
  [ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" -DDS_BENCH_CPU=ON >"$log" 2>&1
  local targets=(bench_allreduce engine_dp_nccl_gpu_test engine_dp_mpi_test engine_dp_abort_test engine_dp_fail_main)
  [ -d launcher ] && targets+=(dsrun launcher_e2e_test)
  [ -f examples/bing_bert/bert_pretrain.cpp ] && targets+=(bert_pretrain)
  [ $DRY = 0 ] && targets=(all)   # the GPU machine has the cores; a no-op once gpu_check built it
  cmake --build "$BUILD" -j"$j" --target "${targets[@]}" >>"$log" 2>&1
  local rc=$?; say "build: rc=$rc at $(elapsed) s (log $log)"
  [ $rc = 0 ] || grep -E "error|Error" -A3 "$log" | head -40
  return $rc
}

# ---------------------------------------------------------------------------------------------- tests
part_tests() {
  need tests "$([ $DRY = 1 ] && echo 60 || echo 150)" || return 0
  local specs=() name cmd log rc res counts t
  for t in engine_dp_nccl_gpu_test ${MGC_RANK_TESTS:-}; do specs+=("$t|$N|${MPI[*]} -np $N $BIN/$t"); done
  [ $DRY = 0 ] || [ "$N" != 2 ] &&   # ctest's own run below is this one in a 2-rank dry run
    specs+=("engine_dp_abort_test ($DEV)|$N|env DS_DP_FAIL_NP=$N DS_DP_FAIL_DEVICE=$DEV $BIN/engine_dp_abort_test")
  # ctest's mpi tests: those it starts under mpiexec run with N ranks; those that start their own
  # jobs (mpirun or dsrun inside) run as they are.
  while IFS='|' read -r name cmd; do
    if [ -z "$cmd" ]; then specs+=("$name|-|"); elif [[ $cmd == *mpiexec* || $cmd == *mpirun* ]]; then
      specs+=("$name|$N|${MPI[*]} -np $N ${cmd##* }")
    elif [ $DRY = 1 ] || [ "${MGC_ALL_MPI:-0}" = 1 ]; then specs+=("$name|own|$cmd")
    else row tests "$name (own CPU job)" "-" "" "skipped: CI runs it; MGC_ALL_MPI=1 runs it here"; fi
  done < <(ctest --test-dir "$BUILD" -N -V -L mpi 2>/dev/null | tr -d '"' | awk '
    /Test command:/ { c = $0; sub(/.*Test command: */, "", c) } /Test +#[0-9]+:/ { print $NF "|" c; c = "" }')
  printf '  %-34s %6s %-9s %6s  %s\n' test ranks result seconds "gtest (first rank to report)"
  for s in "${specs[@]}"; do
    IFS='|' read -r name ranks cmd <<<"$s"
    log=$LOGDIR/test_$(tr -c 'A-Za-z0-9_\n' '_' <<<"$name").log
    t=$(date +%s)
    if [ -z "$cmd" ]; then res="NOT BUILT"; counts="-"
    else
      run "$log" "$(guard 300)" bash -c "$cmd"; rc=$?
      counts=$(awk '/\[  PASSED  \]/ && !p { p = $4 } /\[  SKIPPED \]/ && !s { s = $4 } /\[  FAILED  \] [0-9]+ test/ && !f { f = $4 }
        END { printf "%d passed, %d skipped, %d failed", p, s, f }' "$log")
      res=$([ $rc = 0 ] && echo PASS || { [ $rc = 124 ] && echo HANG || echo "FAIL($rc)"; })
    fi
    printf '  %-34s %6s %-9s %6s  %s\n' "$name" "$ranks" "$res" $(( $(date +%s) - t )) "$counts"
    row tests "$name ($ranks ranks)" "$counts" "pass" "$res"
  done
}

# ------------------------------------------------------------------------------------------ allreduce
part_allreduce() {
  need allreduce 60 || return 0
  local log=$LOGDIR/allreduce.log args=(--no-model --min-bytes 1M --max-bytes 1G --iters 20 --warmup 5)
  [ $DRY = 1 ] && args=(--no-model --cpu --min-bytes 64K --max-bytes 1M --iters 3 --warmup 1)
  run "$log" "$(guard 180)" "${MPI[@]}" -np "$N" "$BIN/bench_allreduce" "${args[@]}"; local rc=$?
  sed -n '/^#  *size/,/peak/p' "$log"
  local peak big wrong
  peak=$(sed -n 's/.*peak \([0-9.]*\) GB\/s.*/\1/p' "$log")
  big=$(awk '$1 ~ /^[0-9]+$/ { last = $7 } END { print last }' "$log")
  wrong=$(sed -n 's/# out of bounds values: \([0-9]*\).*/\1/p' "$log")
  if [ $rc != 0 ] || [ -z "$peak" ]; then row allreduce "bench_allreduce on $N ranks" "rc=$rc" "runs" FAIL; return 0; fi
  row allreduce "results correct (#wrong, all sizes)" "$wrong" 0 "$([ "$wrong" = 0 ] && echo PASS || echo FAIL)"
  if [ "$N" -lt 2 ]; then row allreduce "peak bus bandwidth" "n/a: 1 rank" ">= 90% of 370 GB/s" "not run"; return 0; fi
  local pct; pct=$(calc %.1f "100 * $peak / 370")
  row allreduce "peak busbw, $N ranks" "$peak GB/s = $pct% of 370" ">= 90%" "$(goal_ge "$pct" 90)"
  row allreduce "busbw at the largest size" "$big GB/s" "info" info
}

# -------------------------------------------------------------------------------------------- scaling
NS=(); for n in 1 2 4 8; do [ "$n" -le "$N" ] && NS+=("$n"); done
[[ " ${NS[*]} " == *" $N "* ]] || NS+=("$N")
BERT_DP=0   # set when bert_pretrain ran on 2+ ranks
# A DeepSpeed config from $DSCFG for any world size: micro MICRO, no accumulation, overlap on/off.
ds_config() {
  python3 - "$DSCFG" "$1" "$MICRO" "$2" <<'EOF'
import json, sys
base, out, micro, overlap = sys.argv[1:5]
c = json.load(open(base))
c.pop("train_batch_size", None)
c.update(train_micro_batch_size_per_gpu=int(micro), gradient_accumulation_steps=1, steps_per_print=10**6)
c.setdefault("data_parallel", {})["overlap_comm"] = overlap == "1"
json.dump(c, open(out, "w"), indent=1)
EOF
}
dsrun_cmd() { # N: dsrun's ranks
  if [ $DRY = 1 ]; then echo "$BIN/dsrun --num_procs $1 --launcher_args=--oversubscribe"; else echo "$BIN/dsrun --num_gpus $1"; fi
}
bert_cmd() { # N OVERLAP JOB [MAX_STEPS]: the bert_pretrain command line
  local cfg=$SCRATCH/ds_${3}.json; ds_config "$cfg" "$2" || return 1
  echo "$(dsrun_cmd "$1") $BIN/bert_pretrain --cf $MODEL --deepspeed_config $cfg --max_seq_length 128" \
    "--max_predictions_per_seq 20 --output_dir $SCRATCH/out_$3 --job_name $3 --data_path_prefix $DATA" \
    "--lr_schedule EE --max_steps ${4:-$STEPS} --print_steps $(( STEPS / 8 > 0 ? STEPS / 8 : 1 ))"
}
# samples/s of a bert_pretrain log: median of the progress lines after the first quarter of the steps
bert_sps() {
  sed -n 's/.*bing_bert_progress: step=\([0-9]*\),.*samples\/s=\([0-9.]*\).*/\1 \2/p' "$1" |
    awk -v w=$(( STEPS / 4 )) '$1 > w { print $2 }' | median
}
part_scaling() {
  need scaling "$([ $DRY = 1 ] && echo 60 || echo 200)" || return 0
  local n sps log rc base="" src="" why="" on="" off=""
  declare -A S
  if [ ! -x "$BIN/bert_pretrain" ]; then why="bert_pretrain is not built"
  elif ! ls "$DATA"/shards/seq128/*training* >/dev/null 2>&1; then
    why="no training shards in $DATA/shards/seq128"
    say "  $why (DS_BERT_DATA=$DATA). For bert_pretrain: run examples/bing_bert/fetch_data.sh on a machine"
    say "  with network, then carry 'data' to the device (run's carry=[\"data\"]) or set DS_BERT_DATA."
  else
    for n in "${NS[@]}" "${N}off"; do
      local ovl=1 k=$n; [[ $n == *off ]] && { ovl=0; k=${n%off}; [ "$k" -lt 2 ] && continue; }
      log=$LOGDIR/scaling_bert_n$n.log
      run "$log" "$(guard 240)" bash -c "$(bert_cmd "$k" $ovl "mgc_n$n")"; rc=$?
      rm -rf "$SCRATCH/out_mgc_n$n"   # checkpoints: GBs for BERT-large
      sps=$(bert_sps "$log")
      if [ $rc != 0 ] || [ -z "$sps" ]; then
        why="bert_pretrain on $k rank(s): rc=$rc, no samples/s: $(grep -m1 -iE 'error|fail' "$log" | cut -c1-150)"
        break
      fi
      S[$n]=$sps; say "  bert_pretrain n=$k overlap=$ovl: $sps samples/s"
      [ "$k" -ge 2 ] && BERT_DP=1
    done
    if [ -n "${S[1]:-}" ] && { [ $BERT_DP = 1 ] || [ "$N" = 1 ]; }; then src="bert_pretrain ($MODEL, $(basename "$DSCFG"), micro $MICRO)"
    elif [ -n "${S[1]:-}" ]; then row scaling "bert_pretrain samples/s, 1 GPU" "${S[1]}" "" info; fi
  fi
  if [ -z "$src" ]; then
    say "  $why: scaling of the bench_allreduce stand-in instead"
    unset S; declare -A S
    local args=(--no-collectives --batch "$MICRO" --seq 128 --steps 10)
    [ $DRY = 1 ] && args=(--no-collectives --cpu --layers 2 --hidden 64 --heads 4 --vocab 1000 --batch "$MICRO" --seq 16 --steps 3)
    for n in "${NS[@]}"; do
      log=$LOGDIR/scaling_standin_n$n.log
      run "$log" "$(guard 180)" "${MPI[@]}" -np "$n" "$BIN/bench_allreduce" "${args[@]}" || { say "  stand-in n=$n failed (log $log)"; break; }
      S[$n]=$(awk '/overlap_comm=true/ { print $4 }' "$log"); S[${n}off]=$(awk '/overlap_comm=false/ { print $4 }' "$log")
      [ "$n" = 1 ] && S[1]=$(awk '/no reducer/ { print $7 }' "$log")
      say "  stand-in n=$n: overlap on ${S[$n]}, off ${S[${n}off]} samples/s"
    done
    src="bench_allreduce stand-in ($([ $DRY = 1 ] && echo 'tiny, fp32' || echo 'BERT-large shapes, fp16')), micro $MICRO; $why"
  fi
  say "  source: $src"
  base=${S[1]:-}
  for n in "${NS[@]}"; do
    [ -n "${S[$n]:-}" ] || { row scaling "samples/s, $n GPU(s)" "-" "" "not run"; continue; }
    if [ "$n" = 1 ] || [ -z "$base" ]; then row scaling "samples/s, $n GPU(s)" "${S[$n]}" "baseline" info; continue; fi
    local eff; eff=$(calc %.1f "100 * ${S[$n]} / ($n * $base)")
    row scaling "samples/s, $n GPUs (efficiency vs 1)" "${S[$n]} ($eff%)" "$([ "$n" = "$N" ] && echo '>= 95%' || echo info)" \
      "$([ "$n" = "$N" ] && goal_ge "$eff" 95 || echo info)"
  done
  on=${S[$N]:-}; off=${S[${N}off]:-}
  if [ -n "$on" ] && [ -n "$off" ] && [ "$N" -ge 2 ]; then
    row scaling "ms/step overlap off vs on, $N GPUs" "$(calc %.1f "1000 * $MICRO * $N / $off") vs $(calc %.1f "1000 * $MICRO * $N / $on") ms (on saves $(calc %.1f "100 * (1 - $off / $on)")%)" "" info
  fi
  row scaling "figures from" "$src" "" info
}

# --------------------------------------------------------------------------------------------- faults
# kill_test NAME READY_REGEX CMD...: start CMD, wait for READY_REGEX in its output, kill -9 the last
# rank, then the job must end non-zero within 60 s with no process of it left.
kill_test() {
  local name=$1 ready=$2; shift 2
  local log tag="mgc$$_$RANDOM" victim=$(( N - 1 )) t pid="" rc
  log=$LOGDIR/faults_kill_$(tr -c 'A-Za-z0-9_\n' '_' <<<"$name").log
  [ "$victim" -ge 1 ] || { row faults "kill -9 one rank: $name" "n/a: 1 rank" "" "not run"; return 0; }
  echo "# $*" >"$log"
  MGC_TAG=$tag timeout -k 10 "$(guard 150)" "$@" >>"$log" 2>&1 &
  local job=$!
  for ((t = 0; t < 1200; t++)); do grep -qE "$ready" "$log" && break; kill -0 $job 2>/dev/null || break; sleep 0.1; done
  pid=$(tagged_pids "$tag" "$victim" | head -1)
  if [ -z "$pid" ]; then kill -TERM $job 2>/dev/null; wait $job
    row faults "kill -9 rank $victim: $name" "rank $victim not found running (log $log)" "" FAIL; return 0; fi
  local t_kill; t_kill=$(date +%s.%N); kill -9 "$pid"; wait $job; rc=$?
  local secs; secs=$(calc %.1f "$(date +%s.%N) - $t_kill"); sleep 1
  local left_over; left_over=$(tagged_pids "$tag" | wc -l)
  local ok=PASS; { [ "$rc" = 0 ] || [ "${secs%.*}" -ge 60 ] || [ "$left_over" != 0 ]; } && ok=FAIL
  say "  kill -9 rank $victim ($name, pid $pid): exit $rc after $secs s, $left_over process(es) left"
  row faults "kill -9 rank $victim: $name" "exit $rc after $secs s, $left_over left" "non-zero, < 60 s, 0 left" $ok
}
part_faults() {
  need faults 90 || return 0
  local dt log dtypes=(bf16 fp16) size=(--hidden 1024 --layers 8 --micro 32 --bucket-cap-mb 4)
  [ $DRY = 1 ] && { dtypes=(fp32 bf16); size=(--hidden 64 --layers 3 --micro 4 --bucket-cap-mb 0.01); }
  for dt in "${dtypes[@]}"; do
    log=$LOGDIR/faults_hash_$dt.log
    run "$log" "$(guard 120)" "${MPI[@]}" -np "$N" "$BIN/engine_dp_fail_main" ok --device "$DEV" --dtype "$dt" --steps 100 --hash "${size[@]}"
    local rc=$? ranks distinct changed
    ranks=$(grep -c 'params_hash=' "$log"); distinct=$(sed -n 's/.*params_hash=\([0-9a-f]*\).*/\1/p' "$log" | sort -u | wc -l)
    changed=$(awk '/params_hash=/ { split($3, a, "="); split($4, b, "="); if (a[2] != b[2]) c++ } END { print c + 0 }' "$log")
    local ok=PASS; { [ $rc != 0 ] || [ "$ranks" != "$N" ] || [ "$distinct" != 1 ] || [ "$changed" != "$N" ]; } && ok=FAIL
    say "  $dt, 100 steps: $ranks rank(s) reported, $distinct distinct weight hash(es), trained on $changed (rc $rc)"
    row faults "weights equal on all ranks after 100 steps ($dt)" "$ranks ranks, $distinct distinct hash" "1 hash" $ok
  done
  kill_test "engine_dp_fail_main ($DEV)" '^step 5 ' "${MPI[@]}" -np "$N" "$BIN/engine_dp_fail_main" ok --device "$DEV" \
    --steps 1000000 --print-every 1 "${size[@]}"
  if [ $BERT_DP = 1 ]; then
    read -r -a cmd <<<"$(bert_cmd "$N" 1 mgc_kill 100000)"
    kill_test "dsrun bert_pretrain" 'bing_bert_progress: step=' "${cmd[@]}"
    rm -rf "$SCRATCH/out_mgc_kill"
  fi
}

# ---------------------------------------------------------------------------------------------- main
{
  say "multi_gpu_check: $N rank(s), device $DEV$([ $DRY = 1 ] && echo ' (--cpu-dry: CPU ranks, MPI backend, tiny sizes; figures are not GPU figures)'), part $PART, budget $BUDGET s"
  say "commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+changes'), build $BUILD, logs $LOGDIR"
  [ $DRY = 0 ] && nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
  [ $DRY = 0 ] && nvidia-smi topo -m 2>/dev/null | head -$(( N + 1 ))
} | tee "$LOGDIR/header.txt"
status=0
part_build || { echo "multi_gpu_check: the build failed; nothing ran"; row build "cmake --build $BUILD" failed "" FAIL; status=1; }
if [ $status = 0 ]; then
  for p in tests allreduce scaling faults; do
    if [[ ",$PART," == *,all,* || ",$PART," == *,$p,* ]]; then "part_$p"; save_logs; fi
  done
fi
{
  say ""; say "== summary: $N rank(s), $DEV, $(elapsed) s$([ $DRY = 1 ] && echo ', CPU dry run: goals are for GPUs')"
  awk -F'\t' '{ printf "  %-10s %-50s %-46s %-24s %s\n", $1, $2, $3, $4, $5 }
    BEGIN { printf "  %-10s %-50s %-46s %-24s %s\n", "part", "what", "figure", "goal", "status" }' "$SUMMARY"
} | tee "$LOGDIR/summary.txt"
save_logs
grep -qP '\t(FAIL|HANG|NOT BUILT)[^\t]*$' "$SUMMARY" && status=1
echo "multi_gpu_check: status=$status"
exit $status
