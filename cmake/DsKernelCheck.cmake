# kernel_check: compile every .cu file of ours with nvcc for sm_90a and sm_80, also on machines whose
# Torch has no CUDA (the CPU CI), so CI proves the kernels compile. Kernels include no Torch header.
find_program(DS_NVCC nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
if(NOT DS_NVCC)
  message(STATUS "kernel_check: nvcc not found, the CUDA compile check is off")
  return()
endif()
file(GLOB_RECURSE _cu_files CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/ops/*.cu ${CMAKE_SOURCE_DIR}/engine/*.cu ${CMAKE_SOURCE_DIR}/sparse_attention/*.cu
     ${CMAKE_SOURCE_DIR}/transformer/*.cu ${CMAKE_SOURCE_DIR}/examples/*.cu
     ${CMAKE_SOURCE_DIR}/tests/*.cu)
set(_objs "")
foreach(_cu IN LISTS _cu_files)
  file(RELATIVE_PATH _rel ${CMAKE_SOURCE_DIR} ${_cu})
  string(REPLACE "/" "_" _name ${_rel})
  set(_obj ${CMAKE_BINARY_DIR}/kernel_check/${_name}.o)
  file(GLOB_RECURSE _deps CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/ops/*.cuh ${CMAKE_SOURCE_DIR}/ops/*.h
       ${CMAKE_SOURCE_DIR}/sparse_attention/*.cuh ${CMAKE_SOURCE_DIR}/transformer/*.cuh)
  add_custom_command(OUTPUT ${_obj}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/kernel_check
    COMMAND ${DS_NVCC} -std=c++17 -O3 --expt-relaxed-constexpr -Xcompiler=-Wall
            -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80
            -I${CMAKE_SOURCE_DIR} -c ${_cu} -o ${_obj}
    DEPENDS ${_cu} ${_deps}
    COMMENT "kernel_check: nvcc ${_rel} (sm_90a, sm_80)" VERBATIM)
  list(APPEND _objs ${_obj})
endforeach()
list(LENGTH _objs _n)
add_custom_target(kernel_check ALL DEPENDS ${_objs})
message(STATUS "kernel_check: ${_n} .cu files compiled with ${DS_NVCC} for sm_90a and sm_80")

# The Torch boundaries of the CUDA kernels (*_cuda.cpp) are only built with a CUDA Torch; here they
# are at least compiled (-fsyntax-only) against this Torch's headers, which include c10/cuda, so CI
# catches their mistakes too.
file(GLOB_RECURSE _cuda_cpp CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/ops/*_cuda.cpp ${CMAKE_SOURCE_DIR}/engine/*_cuda.cpp
     ${CMAKE_SOURCE_DIR}/sparse_attention/*_cuda.cpp ${CMAKE_SOURCE_DIR}/transformer/*_cuda.cpp
     ${CMAKE_SOURCE_DIR}/examples/*_cuda.cpp)
get_filename_component(_cuda_root ${DS_NVCC} DIRECTORY)
get_filename_component(_cuda_root ${_cuda_root} DIRECTORY)
set(_inc_flags "")
foreach(_d IN LISTS TORCH_INCLUDE_DIRS)
  # /usr/include is the compiler's own system path; re-adding it with -isystem breaks #include_next.
  if(NOT _d STREQUAL "/usr/include")
    list(APPEND _inc_flags -isystem ${_d})
  endif()
endforeach()
# Debian's CPU-only LibTorch ships c10/cuda's headers but not the header its CUDA build generates;
# this stand-in has the same content as a CUDA build's (shared library: nothing else to define).
set(_shim ${CMAKE_BINARY_DIR}/kernel_check/shim)
if(NOT EXISTS ${_shim}/c10/cuda/impl/cuda_cmake_macros.h)
  file(WRITE ${_shim}/c10/cuda/impl/cuda_cmake_macros.h
       "#pragma once\n// Stand-in for LibTorch's generated header (kernel_check only).\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
endif()
list(APPEND _inc_flags -isystem ${_shim})
set(_stamps "")
foreach(_f IN LISTS _cuda_cpp)
  file(RELATIVE_PATH _rel ${CMAKE_SOURCE_DIR} ${_f})
  string(REPLACE "/" "_" _name ${_rel})
  set(_stamp ${CMAKE_BINARY_DIR}/kernel_check/${_name}.checked)
  add_custom_command(OUTPUT ${_stamp}
    COMMAND ${CMAKE_CXX_COMPILER} -std=c++17 -fsyntax-only -Wall -Wextra -DDS_WITH_CUDA=1
            -I${CMAKE_SOURCE_DIR} -isystem ${_cuda_root}/include ${_inc_flags} ${_f}
    COMMAND ${CMAKE_COMMAND} -E touch ${_stamp}
    DEPENDS ${_f}
    COMMENT "kernel_check: syntax of ${_rel} (DS_WITH_CUDA)" VERBATIM)
  list(APPEND _stamps ${_stamp})
endforeach()
list(LENGTH _stamps _n)
add_custom_target(kernel_check_boundaries ALL DEPENDS ${_stamps})
message(STATUS "kernel_check: ${_n} *_cuda.cpp boundaries syntax-checked against the Torch headers")
