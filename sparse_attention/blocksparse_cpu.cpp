#include "sparse_attention/blocksparse_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <utility>
#include <vector>

namespace ds::sparse_cpu {
namespace {

// The block products gather each present block's dense operand tiles into one batch for a single
// bmm. Gathered temporaries grow with nnz * block * (K or N), which for long sequences exceeds the
// dense operands several times over; work in chunks of at most this many bytes of temporaries.
std::atomic<int64_t> g_gather_budget_bytes{int64_t{128} << 20};

// Reduction over the blocks of each segment (see segment_sum). `ptr` holds S+1 offsets into the
// block positions of src (or of `order`, when given); `out` is [Z, S, X] with unit stride over X and
// stride X over S (a narrow() of a larger output along S is fine).
template <typename scalar_t, bool kMax>
void segment_reduce_into(const at::Tensor& src, const int64_t* ptr, const int64_t* order, int64_t S,
                         at::Tensor& out) {
  const int64_t Z = src.size(0), nnz = src.size(1), X = src.size(2);
  const scalar_t* in = src.data_ptr<scalar_t>();
  scalar_t* o = out.data_ptr<scalar_t>();
  const int64_t zstride = out.stride(0);
  const scalar_t init = kMax ? -std::numeric_limits<scalar_t>::infinity() : scalar_t(0);
  // Aim for ~16K element-visits per task so small segments are batched and big ones spread out.
  const int64_t per_segment = std::max<int64_t>(1, nnz / std::max<int64_t>(S, 1)) * X;
  const int64_t grain = std::max<int64_t>(1, 16384 / per_segment);
  at::parallel_for(0, Z * S, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t z = i / S, s = i % S;
      scalar_t* dst = o + z * zstride + s * X;
      std::fill(dst, dst + X, init);
      for (int64_t j = ptr[s]; j < ptr[s + 1]; ++j) {
        const scalar_t* row = in + (z * nnz + (order ? order[j] : j)) * X;
        if constexpr (kMax) {
          for (int64_t x = 0; x < X; ++x) dst[x] = std::max(dst[x], row[x]);
        } else {
          for (int64_t x = 0; x < X; ++x) dst[x] += row[x];
        }
      }
    }
  });
}

template <bool kMax>
void reduce_into(const at::Tensor& src, const int64_t* ptr, const int64_t* order, int64_t S, at::Tensor& out) {
  TORCH_INTERNAL_ASSERT(src.is_contiguous() && src.dim() == 3 && out.stride(2) == 1 && out.stride(1) == out.size(2));
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "segment_reduce", [&] {
    segment_reduce_into<scalar_t, kMax>(src, ptr, order, S, out);
  });
}

template <bool kMax>
at::Tensor segment_reduce(const at::Tensor& src_in, const at::Tensor& ptr_in, const at::Tensor& order_in) {
  at::Tensor src = src_in.contiguous();
  at::Tensor ptr = ptr_in.to(at::kLong).contiguous();
  at::Tensor order = order_in.defined() ? order_in.to(at::kLong).contiguous() : order_in;
  const int64_t S = ptr.numel() - 1;
  at::Tensor out = at::empty({src.size(0), S, src.size(2)}, src.options());
  reduce_into<kMax>(src, ptr.data_ptr<int64_t>(), order.defined() ? order.data_ptr<int64_t>() : nullptr, S, out);
  return out;
}

// Splits segments [0, S) into consecutive ranges whose blocks fit the gather budget (at least one
// segment per range).
std::vector<std::pair<int64_t, int64_t>> segment_chunks(const int64_t* ptr, int64_t S, int64_t bytes_per_block) {
  const int64_t max_blocks = std::max<int64_t>(1, g_gather_budget_bytes.load() / std::max<int64_t>(1, bytes_per_block));
  std::vector<std::pair<int64_t, int64_t>> chunks;
  int64_t s0 = 0;
  while (s0 < S) {
    int64_t s1 = s0 + 1;
    while (s1 < S && ptr[s1 + 1] - ptr[s0] <= max_blocks) ++s1;
    chunks.emplace_back(s0, s1);
    s0 = s1;
  }
  return chunks;
}

}  // namespace

int64_t set_gather_budget_bytes(int64_t bytes) { return g_gather_budget_bytes.exchange(std::max<int64_t>(1, bytes)); }

at::Tensor segment_sum(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& order) {
  return segment_reduce<false>(src, ptr, order);
}

at::Tensor segment_max(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& order) {
  return segment_reduce<true>(src, ptr, order);
}

at::Tensor sdd(const at::Tensor& a, const at::Tensor& b, bool trans_a, bool trans_b, const LayoutTables& t) {
  const int64_t Z = a.size(0), H = t.heads, bs = t.block;
  at::Tensor op_a = trans_a ? a.transpose(-1, -2) : a;  // [Z, H, M, K]
  const int64_t K = op_a.size(3);
  // Row tiles of op(A) and column tiles of op(B), both as [b, K] so the gathers read contiguous rows.
  at::Tensor a_tiles = op_a.reshape({Z, H * t.rows, bs, K});                               // [Z, H*R, b, K]
  at::Tensor b_tiles = (trans_b ? b : b.transpose(-1, -2)).reshape({Z, H * t.cols, bs, K});  // [Z, H*C, b, K]
  const int64_t bytes_per_block = 2 * Z * bs * K * static_cast<int64_t>(a.element_size());
  const int64_t chunk = std::max<int64_t>(1, g_gather_budget_bytes.load() / std::max<int64_t>(1, bytes_per_block));
  if (t.nnz <= chunk) {
    return at::matmul(a_tiles.index_select(1, t.row_seg), b_tiles.index_select(1, t.col_seg).transpose(-1, -2));
  }
  at::Tensor out = at::empty({Z, t.nnz, bs, bs}, a.options());
  for (int64_t n0 = 0; n0 < t.nnz; n0 += chunk) {
    const int64_t len = std::min(chunk, t.nnz - n0);
    at::Tensor ag = a_tiles.index_select(1, t.row_seg.narrow(0, n0, len));
    at::Tensor bg = b_tiles.index_select(1, t.col_seg.narrow(0, n0, len));
    out.narrow(1, n0, len).copy_(at::matmul(ag, bg.transpose(-1, -2)));
  }
  return out;
}

at::Tensor dsd(const at::Tensor& s, const at::Tensor& b, bool trans_a, bool trans_b, const LayoutTables& t) {
  const int64_t Z = s.size(0), H = t.heads, bs = t.block;
  // op(S) = S^T swaps the roles of the stored rows and columns: the output tiles follow the column
  // view (CSC) and each block is used transposed.
  const int64_t out_blocks = trans_a ? t.cols : t.rows;
  const int64_t red_blocks = trans_a ? t.rows : t.cols;
  at::Tensor op_b = trans_b ? b.transpose(-1, -2) : b;  // [Z, H, K, N]
  const int64_t N = op_b.size(3);
  at::Tensor b_tiles = op_b.reshape({Z, H * red_blocks, bs, N});  // [Z, H*Kb, b, N]
  const at::Tensor& ptr_t = trans_a ? t.col_ptr : t.row_ptr;
  const at::Tensor& red_seg = trans_a ? t.row_seg : t.col_seg;
  const int64_t* ptr = ptr_t.data_ptr<int64_t>();
  const int64_t S = H * out_blocks;

  at::Tensor out = at::empty({Z, S, bs * N}, s.options());
  const int64_t bytes_per_block = Z * bs * (2 * N + bs) * static_cast<int64_t>(s.element_size());
  for (auto [s0, s1] : segment_chunks(ptr, S, bytes_per_block)) {
    const int64_t n0 = ptr[s0], len = ptr[s1] - n0;
    at::Tensor blocks, red;
    if (trans_a) {
      at::Tensor idx = t.col_nnz.narrow(0, n0, len);
      blocks = s.index_select(1, idx).transpose(-1, -2);
      red = red_seg.index_select(0, idx);
    } else {
      blocks = s.narrow(1, n0, len);
      red = red_seg.narrow(0, n0, len);
    }
    at::Tensor prod = at::matmul(blocks, b_tiles.index_select(1, red)).view({Z, len, bs * N});  // [Z, len, b*N]
    std::vector<int64_t> local(ptr + s0, ptr + s1 + 1);
    for (auto& v : local) v -= n0;
    at::Tensor dst = out.narrow(1, s0, s1 - s0);
    reduce_into<false>(prod, local.data(), nullptr, s1 - s0, dst);
  }
  return out.view({Z, H, out_blocks * bs, N});
}

at::Tensor dds(const at::Tensor& a, const at::Tensor& s, bool trans_a, bool trans_b, const LayoutTables& t) {
  // (op(A) op(S))^T = op'(S) op'(A) with both transposes flipped: one dsd, transposed back.
  return dsd(s, a, !trans_b, !trans_a, t).transpose(-1, -2).contiguous();
}

at::Tensor softmax_forward(const at::Tensor& x, const LayoutTables& t, const SoftmaxOptions& o) {
  const int64_t Z = x.size(0), bs = t.block;
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor v = o.scale != 1.0 ? x * o.scale : x.clone();  // [Z, nnz, b, b]
  if (o.rpe.defined()) {
    at::Tensor rpe = o.rpe.expand({Z, t.heads, t.seq_rows(), t.seq_cols()});
    v.add_(dense_to_sparse(rpe, t));
  }
  auto additive = [&](const at::Tensor& m, MaskMode mode) {
    return mode == MaskMode::Add ? m : at::zeros_like(m).masked_fill_(m.eq(0), -inf);
  };
  if (o.key_padding_mask.defined()) {  // [Z, S] -> per block column [Z, nnz, 1, b]
    at::Tensor kp = additive(o.key_padding_mask, o.key_padding_mask_mode).reshape({Z, t.cols, bs});
    v.add_(kp.index_select(1, t.col).unsqueeze(2));
  }
  if (o.attn_mask.defined()) {  // [S, S] -> tiles [nnz, b, b], shared by the batch
    at::Tensor am = additive(o.attn_mask, o.attn_mask_mode)
                        .reshape({t.rows, bs, t.cols, bs})
                        .permute({0, 2, 1, 3})
                        .reshape({t.rows * t.cols, bs, bs});
    v.add_(am.index_select(0, t.row * t.cols + t.col).unsqueeze(0));
  }
  if (o.valid_keys >= 0 && o.valid_keys < t.seq_cols()) {  // padded keys: [1, nnz, 1, b]
    at::Tensor key = t.col.unsqueeze(1) * bs + at::arange(bs, t.col.options()).unsqueeze(0);
    v.masked_fill_(key.ge(o.valid_keys).view({1, t.nnz, 1, bs}), -inf);
  }
  if (o.causal_diagonal) {  // blocks on the diagonal: keys after the query are excluded
    at::Tensor diag = t.row.eq(t.col).view({1, t.nnz, 1, 1});
    at::Tensor upper = at::ones({bs, bs}, at::dtype(at::kBool)).triu(1).view({1, 1, bs, bs});
    v.masked_fill_(diag.logical_and(upper), -inf);
  }

  // Row max over the present blocks; a row with nothing allowed keeps max -inf, which we replace by
  // 0 so exp gives 0 instead of NaN, and its normaliser 0 gives y = 0 (DeepSpeed: NaN).
  at::Tensor row_max = segment_max(v.amax(-1), t.row_ptr);  // [Z, H*R, b]
  row_max.masked_fill_(row_max.eq(-inf), 0.0);
  at::Tensor e = (v - row_max.index_select(1, t.row_seg).unsqueeze(-1)).exp_();
  at::Tensor denom = segment_sum(e.sum(-1), t.row_ptr);  // [Z, H*R, b]
  at::Tensor inv = at::where(denom.gt(0), denom.reciprocal(), at::zeros_like(denom));
  return e.mul_(inv.index_select(1, t.row_seg).unsqueeze(-1));
}

at::Tensor softmax_backward(const at::Tensor& y, const at::Tensor& dy, const LayoutTables& t) {
  at::Tensor dot = segment_sum((y * dy).sum(-1), t.row_ptr);  // [Z, H*R, b]
  return y * (dy - dot.index_select(1, t.row_seg).unsqueeze(-1));
}

}  // namespace ds::sparse_cpu
