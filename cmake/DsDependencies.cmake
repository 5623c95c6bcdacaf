# Dependency discovery for the two machines:
#  - CPU machine: Debian's libtorch-dev 1.13 (CPU only), OpenMPI, HDF5, nlohmann_json, GTest, CLI11.
#  - GPU machine: the Python torch (CUDA) found through torch.utils.cmake_prefix_path, CUDA, NCCL.
# CMAKE_PREFIX_PATH given by the user wins over the auto-detection.

find_package(nlohmann_json 3.9 REQUIRED)

if(DS_CONFIG_ONLY)
  if(DS_BUILD_TESTS)
    find_package(GTest REQUIRED)
  endif()
  set(DS_CUDA_ENABLED OFF)
  return()
endif()

# --- Torch -------------------------------------------------------------------------------------
# Auto-detect a Python torch's CMake prefix unless the user pointed CMAKE_PREFIX_PATH/Torch_DIR at one.
set(DS_TORCH_PYTHON "" CACHE STRING "Python interpreter whose torch provides LibTorch (auto-detected)")
if(NOT Torch_DIR AND NOT CMAKE_PREFIX_PATH)
  set(_candidates ${DS_TORCH_PYTHON} python3 /usr/bin/python3)
  foreach(_py IN LISTS _candidates)
    if(NOT _py)
      continue()
    endif()
    execute_process(COMMAND ${_py} -c "import torch, os; p = torch.utils.cmake_prefix_path; print(p if os.path.isdir(os.path.join(p, 'Torch')) else '')"
                    OUTPUT_VARIABLE _prefix OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
    if(_rc EQUAL 0 AND _prefix)
      message(STATUS "LibTorch from the Python torch of ${_py}: ${_prefix}")
      list(APPEND CMAKE_PREFIX_PATH ${_prefix})
      break()
    endif()
  endforeach()
endif()

# Torch's CUDA discovery needs the CUDA compiler when the Torch found was built with CUDA.
if(NOT DS_WITH_CUDA STREQUAL "OFF" AND NOT CMAKE_CUDA_COMPILER)
  find_program(_nvcc nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
  if(_nvcc)
    set(CMAKE_CUDA_COMPILER ${_nvcc} CACHE FILEPATH "CUDA compiler")
  endif()
endif()

find_package(Torch REQUIRED)
message(STATUS "Torch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}")

# Does this Torch have CUDA? (Debian's does not; the Python wheel on the GPU machine does.)
set(_torch_has_cuda OFF)
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda OR TARGET c10_cuda)
  set(_torch_has_cuda ON)
endif()

if(DS_WITH_CUDA STREQUAL "ON" AND NOT _torch_has_cuda)
  message(FATAL_ERROR "DS_WITH_CUDA=ON but the Torch found (${TORCH_INSTALL_PREFIX}) has no CUDA. "
          "Point CMAKE_PREFIX_PATH at a CUDA build of LibTorch, e.g. "
          "-DCMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'), "
          "or set -DDS_WITH_CUDA=OFF (or AUTO).")
endif()
if(DS_WITH_CUDA STREQUAL "OFF")
  set(DS_CUDA_ENABLED OFF)
else()
  set(DS_CUDA_ENABLED ${_torch_has_cuda})
endif()

if(DS_CUDA_ENABLED)
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    # Hopper first (wgmma needs the 'a' target), Ampere kept working.
    set(CMAKE_CUDA_ARCHITECTURES 90a 80)
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
endif()
ds_define_cuda_flag()

# PCH: one precompiled <torch/torch.h> shared by every Torch-using target (2-core CI builds).
add_library(ds_torch_pch OBJECT ${CMAKE_SOURCE_DIR}/cmake/pch_stub.cpp)
target_link_libraries(ds_torch_pch PRIVATE ds_options ${TORCH_LIBRARIES})
target_compile_options(ds_torch_pch PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Winvalid-pch>)
target_precompile_headers(ds_torch_pch PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:<torch/torch.h$<ANGLE-R>>")
function(ds_use_torch_pch target)
  target_precompile_headers(${target} REUSE_FROM ds_torch_pch)
  # The PCH is compiled -fPIC (it belongs to a library); gcc rejects it for -fPIE objects, so
  # executables that share it compile -fPIC too (PIC code links into PIE executables).
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "EXECUTABLE")
    set_property(TARGET ${target} PROPERTY POSITION_INDEPENDENT_CODE OFF)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fPIC -Winvalid-pch>)
  endif()
endfunction()

# --- MPI, NCCL, HDF5, GTest, CLI11 --------------------------------------------------------------
find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C CXX)
if(DS_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
find_package(CLI11 CONFIG QUIET)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp HINTS ${CMAKE_SOURCE_DIR}/.deps/cli11/usr/include)
  if(CLI11_INCLUDE_DIR)
    add_library(CLI11::CLI11 INTERFACE IMPORTED)
    target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
    set(CLI11_FOUND ON)
  else()
    message(FATAL_ERROR "CLI11 not found: apt-get install libcli11-dev, or set CLI11_DIR / CLI11_INCLUDE_DIR "
            "(scripts/gpu_check.sh unpacks it from .deps/ on machines without it)")
  endif()
endif()

find_package(NCCL)   # cmake/FindNCCL.cmake; needed only with CUDA
if(DS_CUDA_ENABLED AND NOT NCCL_FOUND)
  message(FATAL_ERROR "CUDA is on but NCCL was not found: set NCCL_ROOT to the folder holding include/nccl.h and lib/libnccl.so")
endif()

# Python with torch, for tests that load libds_torch.so from Python.
set(DS_PYTHON_WITH_TORCH "")
foreach(_py IN ITEMS ${DS_TORCH_PYTHON} python3 /usr/bin/python3)
  execute_process(COMMAND ${_py} -c "import torch" RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
  if(_rc EQUAL 0)
    find_program(_py_path ${_py})
    set(DS_PYTHON_WITH_TORCH ${_py_path})
    break()
  endif()
endforeach()
