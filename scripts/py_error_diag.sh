#!/usr/bin/env bash
# Why does an error raised by our op into Python crash under the pip torch? One command, no gdb:
# the DT_NEEDED order of our library, how many libstdc++/unwinder symbols the torch libraries
# export, each error case in its own process with a SIGSEGV handler that prints the faulting pc
# and its caller, and (LD_DEBUG=bindings) every libstdc++-looking symbol of ours that the dynamic
# linker bound somewhere other than libstdc++ / libgcc_s / libc.
#   scripts/py_error_diag.sh LIB [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
lib=$1; out=${2:-/tmp/py_error_diag}; mkdir -p "$out"
echo "== DT_NEEDED of $lib"; readelf -d "$lib" | awk '/NEEDED/ {print "  " $NF}'
tl=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
echo "== C++ runtime symbols the torch libraries define and export (torch lib dir $tl)"
for f in "$tl"/libc10.so "$tl"/libtorch_cpu.so "$tl"/libtorch_python.so "$tl"/libtorch.so; do
  [ -f "$f" ] || continue
  n=$(nm -D --defined-only "$f" | grep -cE ' (_ZNSt|_ZNKSt|_ZSt|__cxa_|_Unwind_|__gxx_)')
  echo "  $(basename "$f"): $n"
done
echo "== libtorch_global_deps NEEDED:"; readelf -d "$tl"/libtorch_global_deps.so 2>/dev/null | awk '/NEEDED/ {print "  " $NF}'
g++ -shared -fPIC -O1 -I. -x c++ - -o "$out/crash_handler.so" <<'CC'
#include "tests/common/crash_backtrace.h"
CC
echo "== error cases, one process each"
python3 scripts/py_error_probe.py "$lib" --handler "$out/crash_handler.so"
echo "== bindings of $lib's C++ runtime symbols to objects other than libstdc++/libgcc_s/libc/libm (case 6)"
rm -f "$out"/ld.*
LD_DEBUG=bindings,scopes LD_DEBUG_OUTPUT="$out/ld" python3 scripts/py_error_probe.py "$lib" --case 6 > /dev/null 2>&1
grep -h "binding file [^ ]*$(basename "$lib")" "$out"/ld.* |
  grep -E "(_ZNSt|_ZNKSt|_ZSt|__cxa_|_Unwind_|__gxx_|_ZTISt|_ZTVSt|_Znw|_Zdl)" |
  grep -vE " to [^ ]*(libstdc\+\+|libgcc_s|libc\.so|libm\.so|$(basename "$lib"))" |
  sed -E 's/^ *[0-9]+: *//; s/binding file [^ ]* \[[0-9]+\] to ([^ ]*) \[[0-9]+\]: normal symbol `([^'"'"']*)'"'"'.*/\1 \2/' |
  sort | uniq | head -60 | while read -r where sym; do echo "  $(basename "$where") $(echo "$sym" | c++filt)"; done
echo "== global scope as seen by $lib"
grep -h -A2 "object=[^ ]*$(basename "$lib")" "$out"/ld.* | head -3 | cut -c1-600
