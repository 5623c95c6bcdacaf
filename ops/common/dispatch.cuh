// Dispatch once (flash-attention's static_switch.h): a run-time value picks one template
// instantiation, and the body sees a compile-time constant or type.
//
//   DS_DISPATCH_SCALAR(p.kind, T, [&] { launch<T>(p, stream); });
//   DS_BOOL_SWITCH(p.causal, kCausal, [&] { launch<T, kCausal>(p, stream); });
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>

#include "ops/common/scalar_kind.h"

#define DS_BOOL_SWITCH(COND, CONST_NAME, ...) \
  [&] {                                       \
    if (COND) {                               \
      constexpr static bool CONST_NAME = true; \
      return __VA_ARGS__();                   \
    } else {                                  \
      constexpr static bool CONST_NAME = false; \
      return __VA_ARGS__();                   \
    }                                         \
  }()

#define DS_DISPATCH_SCALAR(KIND, TYPE_NAME, ...)                                            \
  [&] {                                                                                     \
    switch (KIND) {                                                                         \
      case ::ds::ScalarKind::F32: { using TYPE_NAME = float; return __VA_ARGS__(); }         \
      case ::ds::ScalarKind::F16: { using TYPE_NAME = __half; return __VA_ARGS__(); }        \
      case ::ds::ScalarKind::BF16: { using TYPE_NAME = __nv_bfloat16; return __VA_ARGS__(); } \
    }                                                                                       \
    throw std::invalid_argument(std::string("unsupported scalar kind ") +                   \
                                ::ds::scalar_kind_name(KIND));                              \
  }()

// Half-precision only (fp16, bf16): kernels whose tensor-core path has no fp32 variant.
#define DS_DISPATCH_HALF(KIND, TYPE_NAME, ...)                                              \
  [&] {                                                                                     \
    switch (KIND) {                                                                         \
      case ::ds::ScalarKind::F16: { using TYPE_NAME = __half; return __VA_ARGS__(); }        \
      case ::ds::ScalarKind::BF16: { using TYPE_NAME = __nv_bfloat16; return __VA_ARGS__(); } \
      default: break;                                                                       \
    }                                                                                       \
    throw std::invalid_argument(std::string("this kernel takes float16 or bfloat16, got ") + \
                                ::ds::scalar_kind_name(KIND));                              \
  }()
