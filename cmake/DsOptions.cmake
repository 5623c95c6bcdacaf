# ds_options: the flags every target of ours links (warnings, sanitizers), as an INTERFACE target
# so flags live on targets, never in global CMAKE_CXX_FLAGS.
add_library(ds_options INTERFACE)
target_compile_options(ds_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${DS_WERROR}>>:-Werror>
  # nvcc: host-side warnings through the host compiler; device code keeps nvcc's own checks.
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall --expt-relaxed-constexpr>)
# The shared libstdc++ first in every library's and executable's DT_NEEDED.
# Some toolchains (the GPU machine's g++ 13 in /opt/gcc) ship only libstdc++.a next to the
# compiler, so a plain link puts a private static copy of libstdc++ into libds_torch.so and into
# every executable, exported and with its iostreams/locale never initialised: c10::str() on an error
# path (streaming a number) then crashed the Python process, and std::filesystem::remove_all
# crashed the checkpoint code. There we link the system's libstdc++.so.6 by path, ahead of
# everything, so no archive member is ever pulled. Elsewhere -lstdc++ first keeps our references
# bound to libstdc++ before any library that exports copies of its functions.
if(NOT DS_SANITIZE)
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libstdc++.so
                  OUTPUT_VARIABLE _ds_libstdcxx_so OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(IS_ABSOLUTE "${_ds_libstdcxx_so}")
    set(DS_LIBSTDCXX "-lstdc++")
  else()
    find_file(DS_SYSTEM_LIBSTDCXX libstdc++.so.6
              PATHS /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib64 /usr/lib/aarch64-linux-gnu
              NO_DEFAULT_PATH)
    if(DS_SYSTEM_LIBSTDCXX)
      set(DS_LIBSTDCXX "${DS_SYSTEM_LIBSTDCXX}")
      message(STATUS "${CMAKE_CXX_COMPILER} has no shared libstdc++; linking ${DS_SYSTEM_LIBSTDCXX}")
    else()
      message(WARNING "${CMAKE_CXX_COMPILER} has no shared libstdc++ and no libstdc++.so.6 was found: "
                      "every library and executable gets a private static copy (error messages may crash)")
    endif()
  endif()
  if(DS_LIBSTDCXX)
    target_link_options(ds_options INTERFACE "LINKER:--push-state,--no-as-needed" "${DS_LIBSTDCXX}"
                        "LINKER:--pop-state")
  endif()
endif()
if(DS_SANITIZE)
  target_compile_options(ds_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                         -fno-sanitize-recover=undefined)
  target_link_options(ds_options INTERFACE -fsanitize=address,undefined)
endif()

# DS_WITH_CUDA is defined for every target of ours when the CUDA kernels are built, so device
# dispatch code can call them (#if DS_WITH_CUDA).
function(ds_define_cuda_flag)
  if(DS_CUDA_ENABLED)
    target_compile_definitions(ds_options INTERFACE DS_WITH_CUDA=1)
  endif()
endfunction()
