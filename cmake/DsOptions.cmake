# ds_options: the flags every target of ours links (warnings, sanitizers), as an INTERFACE target
# so flags live on targets, never in global CMAKE_CXX_FLAGS.
add_library(ds_options INTERFACE)
target_compile_options(ds_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${DS_WERROR}>>:-Werror>
  # nvcc: host-side warnings through the host compiler; device code keeps nvcc's own checks.
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall --expt-relaxed-constexpr>)
# libstdc++ and libgcc_s first in every library's and executable's DT_NEEDED. The pip LibTorch
# (torch 2.x wheels, built with a gcc-toolset whose newer libstdc++ parts are linked statically)
# exports its own unversioned copies of some libstdc++ functions (std::filesystem, exception_ptr
# helpers, ...). A library loaded with RTLD_LOCAL (torch.ops.load_library) resolves its undefined
# symbols in its own DT_NEEDED order, so with libtorch listed first those copies were picked over
# the system libstdc++ and crashed (std::filesystem::remove_all called through a null pointer).
# Harmless where Torch exports no such copies (Debian's LibTorch).
if(NOT DS_SANITIZE)
  target_link_options(ds_options INTERFACE
    "LINKER:--push-state,--no-as-needed,-lstdc++,-lgcc_s,--pop-state")
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
