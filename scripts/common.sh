# Shared by run.sh and test.sh: install what is missing (Debian 12), configure and build.
# Sourced, not run. Safe to rerun: installs only missing packages, reuses the build folder.

# libopenblas0-openmp: Debian's libtorch calls the system BLAS, which is otherwise the reference
# libblas3 (about 1 GFLOP/s on one core; OpenBLAS 35x that); the OpenMP build shares libtorch's
# OpenMP threads instead of starting its own.
DS_APT_PACKAGES=(build-essential cmake g++ git libtorch-dev python3-torch nlohmann-json3-dev
  libopenmpi-dev openmpi-bin libhdf5-dev libcli11-dev libgtest-dev clang libclang-rt-14-dev
  nodejs npm libopenblas0-openmp python3-h5py)

ds_log() { printf '\n==> %s\n' "$*"; }

ds_sudo() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
  else echo "error: need root (or sudo) to install: $*" >&2; return 1; fi
}

# Install the Debian packages that are not installed yet.
ds_install_deps() {
  local missing=()
  for p in "${DS_APT_PACKAGES[@]}"; do
    # NodeSource's nodejs package ships npm itself and conflicts with Debian's npm package.
    if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # A machine with a CUDA build of Python's torch (the GPU machines) builds against that LibTorch:
  # Debian's CPU-only libtorch-dev and python3-torch are not needed there.
  if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    local keep=()
    for p in "${missing[@]}"; do case "$p" in libtorch-dev|python3-torch) ;; *) keep+=("$p");; esac; done
    missing=("${keep[@]}")
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    ds_log "apt-get install ${missing[*]}"
    ds_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    if ! ds_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
      # An offline machine or another distribution (the GPU machines: Ubuntu, no network) may have
      # what is needed under other names or outside dpkg: go on, CMake's summary says what is missing.
      echo "warning: apt-get could not install ${missing[*]}; continuing with what is installed" >&2
    fi
  fi
}

# ds_build DIR [cmake args...]: configure (if needed) and build with all cores (2 on CI).
ds_build() {
  local dir=$1; shift
  local jobs; jobs=$(nproc 2>/dev/null || echo 2)
  ds_log "configure $dir"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@"
  ds_log "build $dir (-j$jobs)"
  cmake --build "$dir" -j"$jobs"
}
