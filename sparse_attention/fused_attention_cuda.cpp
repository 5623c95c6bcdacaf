// Torch boundary of the fused block-sparse attention kernels (fused/, bsa::Params): q, k, v padded to
// whole blocks and made contiguous, the masks and rpe turned into the float32 additive tensors the
// kernels read (mul-mode masks become 0 / -inf), the padding passed as s_valid, the tile tables and
// work orders from the layout's device cache (built once per device and batch size), forward and
// backward as one autograd Function (no atomics: deterministic).
//
// Kernel choice (DS_BSA_KERNEL=auto|sm80|sm90, as the N:M path): auto takes the Hopper (wgmma) kernels
// when the device is sm_90 and this binary carries sm_90a code (fused_probe.h), else the mma.sync
// kernels (sm_80+); sm80 forces the mma.sync kernels (the tests run both on an H100); sm90 insists on
// the Hopper ones.
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "ops/common/torch_utils.h"
#include "sparse_attention/blocksparse_cuda.h"
#include "sparse_attention/device_tables.h"
#include "sparse_attention/fused/bsa_params.h"
#include "sparse_attention/fused_probe.h"

namespace ds::sparse_cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct FusedState : torch::CustomClassHolder {
  LayoutTables tables;
  at::Tensor key_padding;  // [B, Sp] fp32 additive, or undefined
  at::Tensor attn_bias;    // [Sp, Sp]
  at::Tensor rpe;          // [B, H, Sp, Sp]
  float scale = 1.f;
  int s_valid = 0;
  bool causal_diagonal = false;
  bool sm90 = false;
};
using StatePtr = c10::intrusive_ptr<FusedState>;

at::Tensor ready(const at::Tensor& x) {
  at::Tensor c = x.contiguous();
  if (reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 != 0) c = c.clone();
  return c;
}

bool use_sm90(const at::Device& device) {
  const char* env = std::getenv("DS_BSA_KERNEL");
  const std::string choice = env != nullptr && *env != '\0' ? env : "auto";
  TORCH_CHECK_VALUE(choice == "auto" || choice == "sm80" || choice == "sm90",
                    "DS_BSA_KERNEL must be auto, sm80 or sm90; got '", choice, "'");
  if (choice == "sm80") return false;
  const bool available = bsa::sm90a_kernels_available(device.index());
  TORCH_CHECK(choice != "sm90" || available, "DS_BSA_KERNEL=sm90: the Hopper kernels cannot run on ", device,
              " (needs compute capability 9.0 and a build with sm_90a code)");
  return available;
}

// fp32 additive form of a mask (mul: 0 -> -inf, anything else -> 0).
at::Tensor additive(const at::Tensor& m, MaskMode mode) {
  at::Tensor f = m.to(at::kFloat);
  if (mode == MaskMode::Add) return f;
  return at::zeros_like(f).masked_fill_(f.eq(0), -std::numeric_limits<float>::infinity());
}

const float* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

bsa::Params make_params(const FusedState& st, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& o, const at::Tensor& lse) {
  const LayoutTables& t = st.tables;
  const DeviceFusedTables& d = t.cache().fused(t, q.device());
  const auto orders = t.cache().fused_order(t, q.device(), q.size(0));
  bsa::Params p;
  p.kind = q.scalar_type() == at::kHalf ? ScalarKind::F16 : ScalarKind::BF16;
  p.B = static_cast<int>(q.size(0));
  p.H = static_cast<int>(q.size(1));
  p.S = static_cast<int>(q.size(2));
  p.D = static_cast<int>(q.size(3));
  p.s_valid = st.s_valid;
  p.block = static_cast<int>(t.block);
  p.chunk = d.chunk;
  p.layout_heads = d.layout_heads;
  p.num_tiles = d.num_tiles;
  p.causal_diagonal = st.causal_diagonal;
  p.scale = st.scale;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.o = o.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.q_bs = q.stride(0);
  p.q_hs = q.stride(1);
  p.q_rs = q.stride(2);
  p.k_bs = k.stride(0);
  p.k_hs = k.stride(1);
  p.k_rs = k.stride(2);
  p.o_bs = o.stride(0);
  p.o_hs = o.stride(1);
  p.o_rs = o.stride(2);
  p.key_padding = ptr_or_null(st.key_padding);
  p.attn_bias = ptr_or_null(st.attn_bias);
  p.rpe = ptr_or_null(st.rpe);
  p.q_tiles = {d.q_ptr.data_ptr<int32_t>(), d.q_chunk.data_ptr<int32_t>(),
               reinterpret_cast<const uint32_t*>(d.q_mask.data_ptr<int32_t>()), orders.first.data_ptr<int32_t>()};
  p.k_tiles = {d.k_ptr.data_ptr<int32_t>(), d.k_chunk.data_ptr<int32_t>(),
               reinterpret_cast<const uint32_t*>(d.k_mask.data_ptr<int32_t>()), orders.second.data_ptr<int32_t>()};
  return p;
}

// q, k, v: contiguous [B, H, Sp, D], Sp a multiple of the block.
struct FusedAttentionFunction : torch::autograd::Function<FusedAttentionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            StatePtr st) {
    const c10::cuda::CUDAGuard guard(q.device());
    at::Tensor o = at::empty_like(q);
    at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
    const bsa::Params p = make_params(*st, q, k, v, o, lse);
    if (st->sm90) {
      bsa::launch_forward_sm90(p, current_stream());
    } else {
      bsa::launch_forward(p, current_stream());
    }
    ctx->save_for_backward({q, k, v, o, lse});
    ctx->saved_data["state"] = at::IValue::make_capsule(st);
    return o;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &o = saved[3], &lse = saved[4];
    const auto* st = static_cast<FusedState*>(ctx->saved_data["state"].toCapsule().get());
    const c10::cuda::CUDAGuard guard(q.device());
    const at::Tensor dout = ready(grads[0]);
    at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
    at::Tensor delta = at::empty_like(lse);
    bsa::Params p = make_params(*st, q, k, v, o, lse);
    p.dout = dout.data_ptr();
    p.delta = delta.data_ptr<float>();
    p.dq = dq.data_ptr();
    p.dk = dk.data_ptr();
    p.dv = dv.data_ptr();
    if (st->sm90) {
      bsa::launch_backward_sm90(p, current_stream());
    } else {
      bsa::launch_backward(p, current_stream());
    }
    return {dq, dk, dv, at::Tensor()};
  }
};

}  // namespace

at::Tensor fused_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                           const LayoutTables& t, const AttentionOptions& o) {
  constexpr const char* op = "ds::sparse_attention (fused, CUDA)";
  DS_CHECK_CUDA(q_in, "q");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const int64_t Z = q_in.size(0), H = q_in.size(1), S = q_in.size(2), D = q_in.size(3);
  const int64_t Sp = t.rows * t.block, pad = Sp - S;
  TORCH_CHECK(pad >= 0 && pad < t.block, op, ": a sequence of ", S, " does not fit the layout's ", t.rows,
              " blocks of ", t.block);
  TORCH_CHECK(Sp * D <= INT32_MAX && Z * H * ((Sp + 63) / 64) <= INT32_MAX, op, ": q ", shape_str(q_in),
              " is too large for the kernels' 32-bit row offsets and grid");
  auto prep = [&](const at::Tensor& x) { return ready(pad ? at::constant_pad_nd(x, {0, 0, 0, pad}) : x); };
  const at::Tensor q = prep(q_in), k = prep(k_in), v = prep(v_in);

  auto st = c10::make_intrusive<FusedState>();
  st->tables = t;
  st->scale = static_cast<float>(o.scale.value_or(1.0 / std::sqrt(static_cast<double>(D))));
  st->s_valid = static_cast<int>(S);
  st->causal_diagonal = o.causal_diagonal;
  st->sm90 = use_sm90(q.device());
  {
    // The masks are constants of the attention (no gradient), prepared outside the graph.
    const at::NoGradGuard no_grad;
    if (o.key_padding_mask.defined()) {
      const at::Tensor m = additive(o.key_padding_mask, o.key_padding_mask_mode);
      st->key_padding = ready(pad ? at::constant_pad_nd(m, {0, pad}) : m);
    }
    if (o.attn_mask.defined()) {
      const at::Tensor m = additive(o.attn_mask, o.attn_mask_mode);
      st->attn_bias = ready(pad ? at::constant_pad_nd(m, {0, pad, 0, pad}) : m);
    }
    if (o.rpe.defined()) {
      const at::Tensor r = o.rpe.to(at::kFloat).expand({Z, H, S, S});
      st->rpe = ready(pad ? at::constant_pad_nd(r, {0, pad, 0, pad}) : r);
    }
  }
  at::Tensor out = FusedAttentionFunction::apply(q, k, v, st);
  return pad ? out.narrow(2, 0, S) : out;
}

}  // namespace ds::sparse_cuda
