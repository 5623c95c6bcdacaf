#!/usr/bin/env bash
# Does a cheaper P.V (the 2:4 sparse tensor-core MMA halves its FLOPs) have room to pay in the N:M
# forward? Builds the standalone harness twice, once as shipped and once with the P.V product removed
# (DS_BSA_EXPERIMENT_NO_PV: wrong results, the time is an upper bound of any P.V saving), and times the
# sm90 forward of dense, 1:2 and 2:4 at B4 H16 S4096 D64. GPU machine:
#   benchmarks/kernels/nm_pv_bound.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/nm_pv_bound}; mkdir -p "$out"
nvcc_flags=(-std=c++17 -O3 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a
            -gencode=arch=compute_80,code=sm_80 -I.)
for f in sparse_attention/fused/bsa_fwd.cu sparse_attention/fused/bsa_bwd.cu sparse_attention/fused/bsa_bwd_sm90.cu \
         sparse_attention/fused/bsa_tables.cpp benchmarks/kernels/bsa_standalone.cu; do
  nvcc "${nvcc_flags[@]}" -x cu -c "$f" -o "$out/$(basename "$f").o" &
done
nvcc "${nvcc_flags[@]}" -c sparse_attention/fused/bsa_fwd_sm90.cu -o "$out/fwd_sm90.o" &
nvcc "${nvcc_flags[@]}" -DDS_BSA_EXPERIMENT_NO_PV -c sparse_attention/fused/bsa_fwd_sm90.cu -o "$out/fwd_sm90_nopv.o" &
wait
common=("$out"/bsa_fwd.cu.o "$out"/bsa_bwd.cu.o "$out"/bsa_bwd_sm90.cu.o "$out"/bsa_tables.cpp.o "$out"/bsa_standalone.cu.o)
nvcc -arch=sm_90a "${common[@]}" "$out/fwd_sm90.o" -o "$out/bsa_standalone"
nvcc -arch=sm_90a "${common[@]}" "$out/fwd_sm90_nopv.o" -o "$out/bsa_standalone_nopv"
for bin in bsa_standalone bsa_standalone_nopv; do
  echo "== $bin"
  for nm in 0 12 24; do "$out/$bin" time 4 16 4096 64 64 1.0 "$nm"; done
done
