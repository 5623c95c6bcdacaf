// The element types our kernels are instantiated for, without Torch or CUDA headers, so the params
// structs shared by *.cu and *_cuda.cpp files can name them.
#pragma once

namespace ds {

enum class ScalarKind { F32, F16, BF16 };

inline const char* scalar_kind_name(ScalarKind k) {
  switch (k) {
    case ScalarKind::F32: return "float32";
    case ScalarKind::F16: return "float16";
    case ScalarKind::BF16: return "bfloat16";
  }
  return "?";
}

}  // namespace ds
