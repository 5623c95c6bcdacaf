// The Torch boundary of the fused N:M attention path (CUDA builds only): pads the sequence to whole
// 64-row tiles (padded keys are excluded through s_valid), turns masks into fp32 additive tensors,
// fills bsa::Params (nm = 12 or 24) and launches the Hopper kernels on sm_90 (the mma.sync ones
// elsewhere, or when DS_BSA_KERNEL=sm80), on the current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "ops/common/torch_utils.h"
#include "sparse_attention/fused/bsa_params.h"
#include "sparse_attention/fused/bsa_tables.h"
#include "sparse_attention/nm/nm_fused.h"

namespace ds {
namespace {

constexpr int64_t kBlock = 64;  // the dense layout's block = the kernels' tile rows

struct DenseTables {
  bsa::HostTables host;
  at::Tensor q_ptr, q_chunk, q_mask, q_order;
  at::Tensor k_ptr, k_chunk, k_mask, k_order;
};

at::Tensor upload(const std::vector<int32_t>& v, at::Device dev) {
  return torch::from_blob(const_cast<int32_t*>(v.data()), {static_cast<int64_t>(v.size())}, torch::kInt32).to(dev);
}
at::Tensor upload(const std::vector<uint32_t>& v, at::Device dev) {
  // Same bytes: the kernels read the masks as uint32.
  return torch::from_blob(const_cast<uint32_t*>(v.data()), {static_cast<int64_t>(v.size())}, torch::kInt32).to(dev);
}

// The tables of a dense (or lower-triangular) layout of nb 64-blocks and the work order for (B, H):
// a pure function of its arguments, memoised (bounded) so they are built and uploaded once per shape,
// not per call.
std::shared_ptr<const DenseTables> dense_tables(int64_t nb, bool causal, int64_t B, int64_t H, at::Device dev) {
  using Key = std::tuple<int64_t, bool, int64_t, int64_t, int>;
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<const DenseTables>> cache;
  const Key key{nb, causal, B, H, dev.index()};
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(key); it != cache.end()) return it->second;

  std::vector<int64_t> layout(static_cast<size_t>(nb * nb), 0);
  for (int64_t r = 0; r < nb; ++r)
    for (int64_t c = 0; c < nb; ++c) layout[r * nb + c] = (!causal || c <= r) ? 1 : 0;
  auto t = std::make_shared<DenseTables>();
  t->host = bsa::build_tables(layout.data(), 1, static_cast<int>(nb), static_cast<int>(kBlock));
  const int tiles = t->host.num_tiles;
  t->q_ptr = upload(t->host.q.ptr, dev);
  t->q_chunk = upload(t->host.q.chunk, dev);
  t->q_mask = upload(t->host.q.mask, dev);
  t->q_order = upload(bsa::build_order(t->host.q, 1, tiles, static_cast<int>(B), static_cast<int>(H)), dev);
  t->k_ptr = upload(t->host.k.ptr, dev);
  t->k_chunk = upload(t->host.k.chunk, dev);
  t->k_mask = upload(t->host.k.mask, dev);
  t->k_order = upload(bsa::build_order(t->host.k, 1, tiles, static_cast<int>(B), static_cast<int>(H)), dev);
  if (cache.size() >= 64) cache.clear();
  cache.emplace(key, t);
  return t;
}

at::Tensor pad_rows(const at::Tensor& x, int64_t s_pad) {
  const int64_t s = x.size(2);
  if (s == s_pad) return x.contiguous();
  return at::constant_pad_nd(x, {0, 0, 0, s_pad - s}).contiguous();
}

// fp32 additive form of a mask ('mul': 0 -> -inf, else 0), padded with zeros to s_pad in its last
// `dims` dims (padded keys are excluded by s_valid instead).
at::Tensor additive_padded(const at::Tensor& mask, MaskMode mode, int64_t s_pad, int dims) {
  if (!mask.defined()) return {};
  at::Tensor m = mask.to(at::kFloat);
  if (mode == MaskMode::Mul)
    m = at::zeros_like(m).masked_fill(m == 0, -std::numeric_limits<float>::infinity());
  const int64_t s = m.size(-1);
  if (s != s_pad) {
    std::vector<int64_t> pad;
    for (int d = 0; d < dims; ++d) {
      pad.push_back(0);
      pad.push_back(s_pad - s);
    }
    m = at::constant_pad_nd(m, pad);
  }
  return m.contiguous();
}

bool use_sm90(const at::Tensor& q) {
  const char* env = std::getenv("DS_BSA_KERNEL");
  const std::string choice = env ? env : "auto";
  TORCH_CHECK_VALUE(choice == "auto" || choice == "sm80" || choice == "sm90",
                    "DS_BSA_KERNEL must be auto, sm80 or sm90; got '", choice, "'");
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(q.get_device());
  const bool hopper = prop->major == 9;
  TORCH_CHECK(choice != "sm90" || hopper, "DS_BSA_KERNEL=sm90 needs a Hopper GPU (compute capability 9.x); this one is ",
              prop->major, ".", prop->minor);
  return choice == "auto" ? hopper : choice == "sm90";
}

bsa::Params make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& o,
                        const at::Tensor& lse, int64_t s_valid, const DenseTables& t, int64_t n, int64_t m,
                        double scale, bool causal, const at::Tensor& kp, const at::Tensor& am) {
  bsa::Params p;
  p.kind = scalar_kind_of(q, "q");
  p.B = static_cast<int>(q.size(0));
  p.H = static_cast<int>(q.size(1));
  p.S = static_cast<int>(q.size(2));
  p.D = static_cast<int>(q.size(3));
  p.s_valid = static_cast<int>(s_valid);
  p.block = static_cast<int>(kBlock);
  p.chunk = t.host.chunk;
  p.layout_heads = 1;
  p.num_tiles = t.host.num_tiles;
  p.causal_diagonal = causal;  // with a lower-triangular layout of whole blocks: exactly causal
  p.scale = static_cast<float>(scale);
  p.nm = static_cast<int>(n * 10 + m);
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.o = o.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.q_bs = q.stride(0); p.q_hs = q.stride(1); p.q_rs = q.stride(2);
  p.k_bs = k.stride(0); p.k_hs = k.stride(1); p.k_rs = k.stride(2);
  p.o_bs = o.stride(0); p.o_hs = o.stride(1); p.o_rs = o.stride(2);
  p.key_padding = kp.defined() ? kp.data_ptr<float>() : nullptr;
  p.attn_bias = am.defined() ? am.data_ptr<float>() : nullptr;
  p.q_tiles = {t.q_ptr.data_ptr<int32_t>(), t.q_chunk.data_ptr<int32_t>(),
               reinterpret_cast<const uint32_t*>(t.q_mask.data_ptr<int32_t>()), t.q_order.data_ptr<int32_t>()};
  p.k_tiles = {t.k_ptr.data_ptr<int32_t>(), t.k_chunk.data_ptr<int32_t>(),
               reinterpret_cast<const uint32_t*>(t.k_mask.data_ptr<int32_t>()), t.k_order.data_ptr<int32_t>()};
  return p;
}

class NMFusedFunction : public torch::autograd::Function<NMFusedFunction> {
 public:
  // kp_add / am_add: fp32 additive masks already padded to the tile (or undefined).
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                                                const at::Tensor& k, const at::Tensor& v,
                                                c10::optional<at::Tensor> kp_add, c10::optional<at::Tensor> am_add,
                                                int64_t n, int64_t m, double scale, bool causal) {
    const c10::cuda::CUDAGuard guard(q.device());
    const int64_t B = q.size(0), H = q.size(1), S = q.size(2);
    const int64_t s_pad = (S + kBlock - 1) / kBlock * kBlock;
    const at::Tensor qp = pad_rows(q, s_pad), kp = pad_rows(k, s_pad), vp = pad_rows(v, s_pad);
    at::Tensor out = at::empty_like(qp);
    at::Tensor lse = at::empty({B, H, s_pad}, q.options().dtype(at::kFloat));
    const auto tables = dense_tables(s_pad / kBlock, causal, B, H, q.device());
    const at::Tensor kpm = kp_add.value_or(at::Tensor()), amm = am_add.value_or(at::Tensor());
    const bsa::Params p = make_params(qp, kp, vp, out, lse, S, *tables, n, m, scale, causal, kpm, amm);
    if (use_sm90(q)) bsa::launch_forward_sm90(p, current_stream()); else bsa::launch_forward(p, current_stream());
    ctx->save_for_backward({qp, kp, vp, out, lse});
    ctx->saved_data["kp"] = kpm;
    ctx->saved_data["am"] = amm;
    ctx->saved_data["n"] = n;
    ctx->saved_data["m"] = m;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["S"] = S;
    return {out.narrow(2, 0, S)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qp = saved[0], &kp = saved[1], &vp = saved[2], &out = saved[3], &lse = saved[4];
    const c10::cuda::CUDAGuard guard(qp.device());
    const int64_t S = ctx->saved_data["S"].toInt();
    const int64_t B = qp.size(0), H = qp.size(1), s_pad = qp.size(2);
    const bool causal = ctx->saved_data["causal"].toBool();
    at::Tensor dout = grads[0].defined() ? pad_rows(grads[0], s_pad) : at::zeros_like(out);
    at::Tensor dq = at::empty_like(qp), dk = at::empty_like(kp), dv = at::empty_like(vp);
    at::Tensor delta = at::empty({B, H, s_pad}, qp.options().dtype(at::kFloat));
    const auto tables = dense_tables(s_pad / kBlock, causal, B, H, qp.device());
    bsa::Params p = make_params(qp, kp, vp, out, lse, S, *tables, ctx->saved_data["n"].toInt(),
                                ctx->saved_data["m"].toInt(), ctx->saved_data["scale"].toDouble(), causal,
                                ctx->saved_data["kp"].toTensor(), ctx->saved_data["am"].toTensor());
    TORCH_CHECK(dout.strides() == out.strides(), "nm_sparse_attention backward: grad_output layout differs from output");
    p.dout = dout.data_ptr();
    p.delta = delta.data_ptr<float>();
    p.dq = dq.data_ptr();
    p.dk = dk.data_ptr();
    p.dv = dv.data_ptr();
    if (use_sm90(qp)) bsa::launch_backward_sm90(p, current_stream()); else bsa::launch_backward(p, current_stream());
    return {dq.narrow(2, 0, S), dk.narrow(2, 0, S), dv.narrow(2, 0, S), at::Tensor(), at::Tensor(),
            at::Tensor(),       at::Tensor(),       at::Tensor(),       at::Tensor()};
  }
};

}  // namespace

at::Tensor nm_fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const NMOptions& o) {
  const std::string why = nm_fused_unsupported_reason(q, o);
  TORCH_CHECK(why.empty(), "nm_fused_attention cannot run these arguments: ", why);
  check_nm(o.n, o.m);
  const int64_t S = q.size(2), D = q.size(3);
  const int64_t s_pad = (S + kBlock - 1) / kBlock * kBlock;
  TORCH_CHECK_VALUE(int64_t(q.size(0)) * q.size(1) * (s_pad / kBlock) < INT32_MAX,
                    "nm_sparse_attention: batch * heads * tiles must fit in int32");
  const double scale = o.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  c10::optional<at::Tensor> kp, am;
  if (o.key_padding_mask.defined()) kp = additive_padded(o.key_padding_mask.to(q.device()), o.key_padding_mask_mode, s_pad, 1);
  if (o.attn_mask.defined()) am = additive_padded(o.attn_mask.to(q.device()), o.attn_mask_mode, s_pad, 2);
  return NMFusedFunction::apply(q, k, v, kp, am, o.n, o.m, scale, o.causal)[0];
}

}  // namespace ds
