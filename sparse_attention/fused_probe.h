// Whether the Hopper (wgmma, sm_90a) kernels of the fused attention can run on a device: the device is
// compute capability 9.0 and this binary carries sm_90a code for it (a build for plain sm_90 or
// sm_80 compiles those kernels to empty bodies, so they must never be launched then). Answered by
// running a one-thread probe kernel once per device. Plain C++ (no Torch, no CUDA headers).
#pragma once

namespace ds::bsa {

bool sm90a_kernels_available(int device);

}  // namespace ds::bsa
