// y = a*x + b*y on raw device pointers: the smallest kernel that exercises the project's launch
// pattern (dispatch once on dtype, launch on the caller's stream, check the launch).
#pragma once

#include <cstdint>

#include "ops/common/scalar_kind.h"

namespace ds::smoke {

struct AxpbyParams {
  ScalarKind kind;
  const void* x;
  void* y;
  int64_t n;
  float a, b;
};

void launch_axpby(const AxpbyParams& p, void* stream);

}  // namespace ds::smoke
