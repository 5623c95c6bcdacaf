// Standalone check-then-time harness of the block-sparse MatMul and Softmax kernels (no Torch), so
// kernel iterations build on the CPU machine with nvcc and run on the GPU machine in seconds:
//   blocksparse_standalone check   every case against a float64 host reference: a PASS/FAIL table,
//                                  exit 1 on any failure
//   blocksparse_standalone time    sdd (q k^T) and dsd (P v) at Z=4, H=16, S=4096, D=64 in bf16 and
//                                  fp16 against cuBLAS dense of the same shape; TFLOP/s on present blocks
// Build (repo root; one command):
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I. benchmarks/kernels/blocksparse_standalone.cu
//        sparse_attention/blocksparse_matmul.cu sparse_attention/blocksparse_softmax.cu
//        sparse_attention/blocksparse_tables.cpp -lcublas -o blocksparse_standalone
// The Torch-level tests (tests/sparse_attention, label gpu) and benchmarks/bench_blocksparse_matmul.py
// are the real gates; this is the kernel developer's loop.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "ops/common/cuda_check.h"
#include "sparse_attention/blocksparse_kernels.h"
#include "sparse_attention/blocksparse_tables.h"

using namespace ds;

namespace {

template <typename T> T to_t(float v);
template <> float to_t<float>(float v) { return v; }
template <> __half to_t<__half>(float v) { return __float2half_rn(v); }
template <> __nv_bfloat16 to_t<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <typename T> float from_t(T v);
template <> float from_t<float>(float v) { return v; }
template <> float from_t<__half>(__half v) { return __half2float(v); }
template <> float from_t<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> ScalarKind kind_of();
template <> ScalarKind kind_of<float>() { return ScalarKind::F32; }
template <> ScalarKind kind_of<__half>() { return ScalarKind::F16; }
template <> ScalarKind kind_of<__nv_bfloat16>() { return ScalarKind::BF16; }
template <typename T> const char* name_of();
template <> const char* name_of<float>() { return "fp32"; }
template <> const char* name_of<__half>() { return "fp16"; }
template <> const char* name_of<__nv_bfloat16>() { return "bf16"; }
// Unit roundoff of the output type (tolerances: see check_*).
template <typename T> double unit_roundoff();
template <> double unit_roundoff<float>() { return 6e-8; }
template <> double unit_roundoff<__half>() { return 4.9e-4; }
template <> double unit_roundoff<__nv_bfloat16>() { return 3.9e-3; }

template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t n_) : n(n_) { DS_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T))); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void up(const std::vector<T>& h) { DS_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> down() const {
    std::vector<T> h(n);
    DS_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() { DS_CUDA_CHECK(cudaMemset(p, 0x7f, std::max<size_t>(n, 1) * sizeof(T))); }
};

// Device copies of the host tables.
struct Tables {
  bsmm::HostTables host;
  DevBuf<int32_t> row_ptr, col;
  DevBuf<int32_t> r_ptr, r_chunk, r_nnz, r_order, c_ptr, c_chunk, c_nnz, c_order;
  DevBuf<uint32_t> r_mask, c_mask;
  explicit Tables(bsmm::HostTables h)
      : host(std::move(h)), row_ptr(host.row_ptr.size()), col(host.col.size()), r_ptr(host.by_row.ptr.size()),
        r_chunk(host.by_row.chunk.size()), r_nnz(host.by_row.nnz.size()), r_order(host.by_row.order.size()),
        c_ptr(host.by_col.ptr.size()), c_chunk(host.by_col.chunk.size()), c_nnz(host.by_col.nnz.size()),
        c_order(host.by_col.order.size()), r_mask(host.by_row.mask.size()), c_mask(host.by_col.mask.size()) {
    row_ptr.up(host.row_ptr); col.up(host.col);
    r_ptr.up(host.by_row.ptr); r_chunk.up(host.by_row.chunk); r_nnz.up(host.by_row.nnz);
    r_order.up(host.by_row.order); r_mask.up(host.by_row.mask);
    c_ptr.up(host.by_col.ptr); c_chunk.up(host.by_col.chunk); c_nnz.up(host.by_col.nnz);
    c_order.up(host.by_col.order); c_mask.up(host.by_col.mask);
  }
  bsmm::LayoutView view() const {
    bsmm::LayoutView v;
    v.heads = host.heads; v.rows = host.rows; v.cols = host.cols; v.block = host.block; v.chunk = host.chunk;
    v.layout_heads = host.layout_heads; v.nnz = host.nnz; v.nnz_head_stride = host.nnz_head_stride;
    return v;
  }
  bsmm::TileTableView by_row() const {
    return {r_ptr.p, r_chunk.p, r_mask.p, r_nnz.p, r_order.p, host.by_row.num_tiles};
  }
  bsmm::TileTableView by_col() const {
    return {c_ptr.p, c_chunk.p, c_mask.p, c_nnz.p, c_order.p, host.by_col.num_tiles};
  }
};

std::vector<int64_t> random_layout(int H, int R, int C, double density, bool empty_rows, bool shared, std::mt19937& rng) {
  std::vector<int64_t> L(size_t(H) * R * C, 0);
  std::uniform_real_distribution<double> u(0, 1);
  for (int h = 0; h < H; ++h)
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) {
        const size_t i = (size_t(h) * R + r) * C + c;
        L[i] = shared && h > 0 ? L[size_t(r) * C + c] : (u(rng) < density || (!empty_rows && c == r % C)) ? 1 : 0;
      }
  return L;
}

double rel_err(const std::vector<double>& ref, const std::vector<double>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

template <typename T>
std::vector<T> random_values(size_t n, std::mt19937& rng, std::vector<double>& as_double) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<T> v(n);
  as_double.resize(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = to_t<T>(u(rng));
    as_double[i] = from_t<T>(v[i]);
  }
  return v;
}

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  std::vector<double> d(v.size());
  for (size_t i = 0; i < v.size(); ++i) d[i] = from_t<T>(v[i]);
  return d;
}

// Tolerance: one rounding of the output to T (<= u relative) plus fp32 accumulation over K random-sign
// terms (~sqrt(K) u32), times a margin of 4.
template <typename T> double tolerance(int64_t K) { return 4.0 * (unit_roundoff<T>() + std::sqrt(double(K)) * 6e-8); }

struct MatmulCase {
  int mode;  // 0 sdd, 1 dsd, 2 dds
  bool ta, tb;
  int block, H, R, C, Z, X;
  double density;
  bool empty_rows, shared;
};

template <typename T>
bool check_matmul(const MatmulCase& c, std::mt19937& rng) {
  const int b = c.block, M = c.R * b, N = c.C * b, H = c.H, Z = c.Z, X = c.X;
  const auto layout = random_layout(H, c.R, c.C, c.density, c.empty_rows, c.shared, rng);
  Tables tab(bsmm::build_tables(layout.data(), H, c.R, c.C, b));
  const int64_t nnz = tab.host.nnz, bb = int64_t(b) * b;
  // Dense view of a block-sparse tensor (zeros elsewhere), per z, h: [R*b][C*b].
  auto expand = [&](const std::vector<double>& s, int z, int h) {
    std::vector<double> d(size_t(M) * N, 0.0);
    for (int r = 0; r < c.R; ++r)
      for (int32_t n = tab.host.row_ptr[size_t(h) * c.R + r]; n < tab.host.row_ptr[size_t(h) * c.R + r + 1]; ++n) {
        const int col = tab.host.col[size_t(n)];
        for (int i = 0; i < b; ++i)
          for (int j = 0; j < b; ++j)
            d[size_t(r * b + i) * N + col * b + j] = s[(size_t(z) * nnz + n) * bb + i * b + j];
      }
    return d;
  };
  std::vector<double> ad, bd, ref;
  std::vector<T> ah, bh;
  size_t c_elems = 0;
  int64_t K = 0;
  if (c.mode == 0) {  // sdd: op(A) [M, X], op(B) [X, N]
    K = X;
    ah = random_values<T>(size_t(Z) * H * M * X, rng, ad);
    bh = random_values<T>(size_t(Z) * H * X * N, rng, bd);
    c_elems = size_t(Z) * nnz * bb;
    ref.assign(c_elems, 0.0);
    for (int z = 0; z < Z; ++z)
      for (int h = 0; h < H; ++h) {
        const double* A = ad.data() + (size_t(z) * H + h) * M * X;
        const double* B = bd.data() + (size_t(z) * H + h) * X * N;
        for (int r = 0; r < c.R; ++r)
          for (int32_t n = tab.host.row_ptr[size_t(h) * c.R + r]; n < tab.host.row_ptr[size_t(h) * c.R + r + 1]; ++n) {
            const int col = tab.host.col[size_t(n)];
            for (int i = 0; i < b; ++i)
              for (int j = 0; j < b; ++j) {
                double s = 0;
                const int m = r * b + i, nn = col * b + j;
                for (int k = 0; k < X; ++k)
                  s += (c.ta ? A[size_t(k) * M + m] : A[size_t(m) * X + k]) * (c.tb ? B[size_t(nn) * X + k] : B[size_t(k) * N + nn]);
                ref[(size_t(z) * nnz + n) * bb + i * b + j] = s;
              }
          }
      }
  } else {
    // dsd: C [Mo, X] = op(S) [Mo, Ko] op(B) [Ko, X]; dds: C [X, No] = op(A) [X, Ko] op(S) [Ko, No].
    const bool dsd = c.mode == 1;
    const bool ts = dsd ? c.ta : c.tb;
    const int Ko = dsd ? (ts ? M : N) : (ts ? N : M);
    const int Out = dsd ? (ts ? N : M) : (ts ? M : N);  // the sparse operand's output extent
    K = Ko;
    std::vector<T>& sh = dsd ? ah : bh;
    std::vector<T>& dh = dsd ? bh : ah;
    std::vector<double>& sd = dsd ? ad : bd;
    std::vector<double>& dd = dsd ? bd : ad;
    sh = random_values<T>(size_t(Z) * nnz * bb, rng, sd);
    dh = random_values<T>(size_t(Z) * H * Ko * X, rng, dd);
    c_elems = size_t(Z) * H * Out * X;
    ref.assign(c_elems, 0.0);
    for (int z = 0; z < Z; ++z)
      for (int h = 0; h < H; ++h) {
        const auto S = expand(sd, z, h);
        auto op_s = [&](int i, int j) { return ts ? S[size_t(j) * N + i] : S[size_t(i) * N + j]; };
        const double* D = dd.data() + (size_t(z) * H + h) * Ko * X;
        double* out = ref.data() + (size_t(z) * H + h) * Out * X;
        if (dsd) {  // op(B)[k][x] = tb ? B[x][k] : B[k][x]
          for (int m = 0; m < Out; ++m)
            for (int x = 0; x < X; ++x) {
              double s = 0;
              for (int k = 0; k < Ko; ++k) s += op_s(m, k) * (c.tb ? D[size_t(x) * Ko + k] : D[size_t(k) * X + x]);
              out[size_t(m) * X + x] = s;
            }
        } else {  // op(A)[x][k] = ta ? A[k][x] : A[x][k]; C [X, Out]
          for (int x = 0; x < X; ++x)
            for (int n = 0; n < Out; ++n) {
              double s = 0;
              for (int k = 0; k < Ko; ++k) s += (c.ta ? D[size_t(k) * X + x] : D[size_t(x) * Ko + k]) * op_s(k, n);
              out[size_t(x) * Out + n] = s;
            }
        }
      }
  }
  DevBuf<T> da(ah.size()), db(bh.size()), dc(c_elems);
  da.up(ah);
  db.up(bh);
  dc.poison();
  if (c.mode == 0) {
    bsmm::SddParams p;
    p.kind = kind_of<T>(); p.Z = Z; p.layout = tab.view(); p.K = X;
    p.a_kmajor = !c.ta; p.b_kmajor = c.tb; p.a = da.p; p.b = db.p; p.c = dc.p; p.tiles = tab.by_row();
    bsmm::launch_sdd(p, nullptr);
  } else if (c.mode == 1) {
    bsmm::DxdParams p;
    p.kind = kind_of<T>(); p.Z = Z; p.layout = tab.view();
    p.M = (c.ta ? c.C : c.R) * b; p.K = (c.ta ? c.R : c.C) * b; p.N = X;
    p.trans_s = c.ta; p.b_kmajor = c.tb; p.trans_out = false;
    p.s = da.p; p.b = db.p; p.c = dc.p; p.tiles = c.ta ? tab.by_col() : tab.by_row();
    bsmm::launch_dxd(p, nullptr);
  } else {
    bsmm::DxdParams p;  // (op(A) op(S))^T = op(S)^T op(A)^T, written transposed
    p.kind = kind_of<T>(); p.Z = Z; p.layout = tab.view();
    p.trans_s = !c.tb;
    p.M = (p.trans_s ? c.C : c.R) * b; p.K = (p.trans_s ? c.R : c.C) * b; p.N = X;
    p.b_kmajor = !c.ta; p.trans_out = true;
    p.s = db.p; p.b = da.p; p.c = dc.p; p.tiles = p.trans_s ? tab.by_col() : tab.by_row();
    bsmm::launch_dxd(p, nullptr);
  }
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  const double err = rel_err(ref, to_double(dc.down()));
  const double tol = tolerance<T>(K);
  const bool ok = err < tol;
  const char* modes[] = {"sdd", "dsd", "dds"};
  std::printf("%s %-4s %s%s blk%-3d %s H%d %dx%d Z%d X%-4d dens %.2f%s%s nnz %-5lld | err %.2e tol %.1e\n",
              ok ? "PASS" : "FAIL", modes[c.mode], c.ta ? "T" : "N", c.tb ? "T" : "N", b, name_of<T>(), H, c.R, c.C, Z,
              X, c.density, c.empty_rows ? " empty-rows" : "", c.shared ? " shared" : "", (long long)nnz, err, tol);
  return ok;
}

struct SoftmaxCase {
  int block, H, nb, Z;
  bool rpe, rpe_bcast;
  int kp, am;  // 0 none, 1 add, 2 mul
  float scale;
  int valid_keys;
  bool causal, empty_rows;
};

template <typename T>
bool check_softmax(const SoftmaxCase& c, std::mt19937& rng) {
  const int b = c.block, H = c.H, Z = c.Z, S = c.nb * b;
  const auto layout = random_layout(H, c.nb, c.nb, 0.5, c.empty_rows, false, rng);
  Tables tab(bsmm::build_tables(layout.data(), H, c.nb, c.nb, b));
  const int64_t nnz = tab.host.nnz, bb = int64_t(b) * b;
  std::vector<double> xd, dyd, rpe_d, kp_d, am_d;
  std::vector<T> xh = random_values<T>(size_t(Z) * nnz * bb, rng, xd);
  for (auto& v : xh) v = to_t<T>(3.f * from_t<T>(v));
  xd = to_double(xh);
  std::vector<T> dyh = random_values<T>(xh.size(), rng, dyd);
  const int Zr = c.rpe_bcast ? 1 : Z;
  std::vector<T> rpe_h = c.rpe ? random_values<T>(size_t(Zr) * H * S * S, rng, rpe_d) : std::vector<T>();
  std::vector<T> kp_h, am_h;
  std::uniform_real_distribution<float> u(0.f, 1.f);
  if (c.kp) {
    kp_h = random_values<T>(size_t(Z) * S, rng, kp_d);
    for (auto& v : kp_h) v = c.kp == 1 ? (u(rng) < 0.2f ? to_t<T>(-INFINITY) : v) : to_t<T>(u(rng) < 0.3f ? 0.f : 1.f);
    kp_d = to_double(kp_h);
  }
  if (c.am) {
    am_h = random_values<T>(size_t(S) * S, rng, am_d);
    if (c.am == 2)
      for (auto& v : am_h) v = to_t<T>(u(rng) < 0.3f ? 0.f : 2.f);
    am_d = to_double(am_h);
  }
  auto mask = [](double m, int mode) { return mode == 1 ? m : (m == 0 ? -INFINITY : 0.0); };
  std::vector<double> y_ref(xd.size(), 0.0), dx_ref(xd.size(), 0.0);
  for (int z = 0; z < Z; ++z)
    for (int h = 0; h < H; ++h)
      for (int r = 0; r < c.nb; ++r) {
        const int32_t n0 = tab.host.row_ptr[size_t(h) * c.nb + r], n1 = tab.host.row_ptr[size_t(h) * c.nb + r + 1];
        for (int i = 0; i < b; ++i) {
          const int q = r * b + i;
          std::vector<double> v;
          std::vector<size_t> at;
          for (int32_t n = n0; n < n1; ++n)
            for (int j = 0; j < b; ++j) {
              const int k = tab.host.col[size_t(n)] * b + j;
              const size_t idx = (size_t(z) * nnz + n) * bb + size_t(i) * b + j;
              double s = xd[idx] * c.scale;
              if (c.rpe) s += rpe_d[((size_t(c.rpe_bcast ? 0 : z) * H + h) * S + q) * S + k];
              if (c.kp) s += mask(kp_d[size_t(z) * S + k], c.kp);
              if (c.am) s += mask(am_d[size_t(q) * S + k], c.am);
              if ((c.valid_keys >= 0 && k >= c.valid_keys) || (c.causal && tab.host.col[size_t(n)] == r && k > q))
                s = -INFINITY;
              v.push_back(s);
              at.push_back(idx);
            }
          double mx = -INFINITY;
          for (double s : v) mx = std::max(mx, s);
          if (mx == -INFINITY) continue;  // nothing allowed: zeros
          double sum = 0;
          for (double s : v) sum += std::exp(s - mx);
          double dot = 0;
          for (size_t e = 0; e < v.size(); ++e) {
            y_ref[at[e]] = std::exp(v[e] - mx) / sum;
            dot += y_ref[at[e]] * dyd[at[e]];
          }
          for (size_t e = 0; e < v.size(); ++e) dx_ref[at[e]] = y_ref[at[e]] * (dyd[at[e]] - dot);
        }
      }
  DevBuf<T> dx(xh.size()), dy(xh.size()), dyv(xh.size()), ddx(xh.size()), drpe(rpe_h.size()), dkp(kp_h.size()),
      dam(am_h.size());
  dx.up(xh);
  dy.up(dyh);
  if (c.rpe) drpe.up(rpe_h);
  if (c.kp) dkp.up(kp_h);
  if (c.am) dam.up(am_h);
  dyv.poison();
  ddx.poison();
  bsmm::SoftmaxParams p;
  p.kind = kind_of<T>(); p.Z = Z; p.layout = tab.view(); p.row_ptr = tab.row_ptr.p; p.col = tab.col.p;
  p.x = dx.p; p.y = dyv.p; p.scale = c.scale;
  if (c.rpe) { p.rpe = drpe.p; p.rpe_hs = int64_t(S) * S; p.rpe_zs = c.rpe_bcast ? 0 : int64_t(H) * S * S; }
  if (c.kp) { p.key_padding = dkp.p; p.key_padding_mode = c.kp == 2; }
  if (c.am) { p.attn_mask = dam.p; p.attn_mask_mode = c.am == 2; }
  p.valid_keys = c.valid_keys;
  p.causal_diagonal = c.causal;
  bsmm::launch_softmax_forward(p, nullptr);
  bsmm::SoftmaxParams pb = p;
  pb.x = dyv.p;  // y
  pb.dy = dy.p;
  pb.y = ddx.p;  // dx
  bsmm::launch_softmax_backward(pb, nullptr);
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  const double ey = rel_err(y_ref, to_double(dyv.down()));
  const double edx = rel_err(dx_ref, to_double(ddx.down()));
  // y: fp32 math, one rounding. dx from the rounded y: two roundings (y and the result).
  const double ty = tolerance<T>(S), tdx = 2 * tolerance<T>(S);
  const bool ok = ey < ty && edx < tdx;
  std::printf("%s softmax blk%-3d %s H%d nb%d Z%d%s kp%d am%d scale %.2f valid %-4d%s%s | y %.2e dx %.2e tol %.1e\n",
              ok ? "PASS" : "FAIL", b, name_of<T>(), H, c.nb, Z, c.rpe ? (c.rpe_bcast ? " rpe-bcast" : " rpe") : "",
              c.kp, c.am, c.scale, c.valid_keys, c.causal ? " causal" : "", c.empty_rows ? " empty-rows" : "", ey, edx, ty);
  return ok;
}

int check_all() {
  std::mt19937 rng(2024);
  int fails = 0, total = 0;
  const double dens[] = {0.05, 0.3, 0.6, 0.9};
  const int xs[] = {40, 72, 24, 64};
  int i = 0;
  for (int block : {16, 32, 64, 128})
    for (int dt = 0; dt < 3; ++dt)
      for (int mode = 0; mode < 3; ++mode)
        for (int t = 0; t < 4; ++t, ++i) {
          MatmulCase c{mode, (t & 1) != 0, (t & 2) != 0, block, 2, 3, 2, 2, xs[i % 4], dens[i % 4], i % 2 == 1, false};
          const bool ok = dt == 0 ? check_matmul<float>(c, rng) : dt == 1 ? check_matmul<__half>(c, rng)
                                                                          : check_matmul<__nv_bfloat16>(c, rng);
          fails += !ok;
          ++total;
        }
  // Long reductions (streamed sdd), shared-head tables over several tiles, extents past one tile.
  for (int K : {136, 264})
    for (int t = 0; t < 4; ++t) {
      MatmulCase c{0, (t & 1) != 0, (t & 2) != 0, 32, 2, 4, 3, 1, K, 0.5, false, false};
      fails += !check_matmul<float>(c, rng) + !check_matmul<__nv_bfloat16>(c, rng);
      total += 2;
    }
  for (int mode = 0; mode < 3; ++mode)
    for (int t = 0; t < 4; ++t) {
      MatmulCase c{mode, (t & 1) != 0, (t & 2) != 0, 16, 3, 10, 10, 2, 64, 0.3, false, true};
      fails += !check_matmul<__half>(c, rng);
      MatmulCase d{mode, (t & 1) != 0, (t & 2) != 0, 16, 2, 10, 9, 1, 136, 0.3, true, false};
      fails += !check_matmul<__nv_bfloat16>(d, rng);
      total += 2;
    }
  for (int block : {16, 32, 64, 128}) {
    const int S = 4 * block;
    const SoftmaxCase cases[] = {
        {block, 2, 4, 2, false, false, 0, 0, 1.f, -1, false, false},
        {block, 2, 4, 2, true, false, 1, 2, 0.4f, -1, false, false},
        {block, 2, 4, 1, true, true, 2, 1, 0.125f, S - 5, true, true},
        {block, 1, 4, 2, false, false, 1, 0, 0.7f, S - block - 3, true, false},
    };
    for (const auto& c : cases) {
      fails += !check_softmax<float>(c, rng) + !check_softmax<__half>(c, rng) + !check_softmax<__nv_bfloat16>(c, rng);
      total += 3;
    }
  }
  std::printf("%d/%d cases passed%s\n", total - fails, total, fails ? "  <-- FAILURES" : "");
  return fails ? 1 : 0;
}

// ---- timing: sdd (scores = q k^T) and dsd (o = P v) against cuBLAS dense -------------------------
template <typename T> cudaDataType cuda_type();
template <> cudaDataType cuda_type<__half>() { return CUDA_R_16F; }
template <> cudaDataType cuda_type<__nv_bfloat16>() { return CUDA_R_16BF; }

#define CUBLAS_CHECK(x)                                                                      \
  do {                                                                                       \
    cublasStatus_t s_ = (x);                                                                 \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                       \
      std::fprintf(stderr, "cuBLAS error %d at %s:%d\n", int(s_), __FILE__, __LINE__);       \
      std::exit(2);                                                                          \
    }                                                                                        \
  } while (0)

template <typename F>
float median_ms(F fn) {
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> ms;
  for (int i = 0; i < 15; ++i) {
    cudaEventRecord(e0);
    fn();
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

template <typename T>
void time_type(cublasHandle_t handle) {
  const int Z = 4, H = 16, S = 4096, D = 64;
  const int64_t n_qk = int64_t(Z) * H * S * D;
  std::mt19937 rng(7);
  std::vector<double> unused;
  std::vector<T> h = random_values<T>(size_t(n_qk), rng, unused);
  DevBuf<T> q(static_cast<size_t>(n_qk)), k(static_cast<size_t>(n_qk)), o(static_cast<size_t>(n_qk));
  q.up(h);
  k.up(h);
  const float one = 1.f, zero = 0.f;
  float dense_sdd = 0, dense_dsd = 0;
  {
    DevBuf<T> scores(size_t(Z) * H * S * S);
    // Row-major scores[S, S] = q k^T is column-major scores^T = k q^T.
    dense_sdd = median_ms([&] {
      CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, S, S, D, &one, k.p, cuda_type<T>(), D,
                                              int64_t(S) * D, q.p, cuda_type<T>(), D, int64_t(S) * D, &zero, scores.p,
                                              cuda_type<T>(), S, int64_t(S) * S, Z * H, CUBLAS_COMPUTE_32F,
                                              CUBLAS_GEMM_DEFAULT));
    });
    // Row-major o[S, D] = P v is column-major o^T = v^T P^T.
    dense_dsd = median_ms([&] {
      CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, D, S, S, &one, k.p, cuda_type<T>(), D,
                                              int64_t(S) * D, scores.p, cuda_type<T>(), S, int64_t(S) * S, &zero, o.p,
                                              cuda_type<T>(), D, int64_t(S) * D, Z * H, CUBLAS_COMPUTE_32F,
                                              CUBLAS_GEMM_DEFAULT));
    });
  }
  const double dense_flops = 2.0 * Z * H * double(S) * S * D;
  std::printf("%s dense cuBLAS Z%d H%d S%d D%d: q k^T %.3f ms %.0f TF/s, P v %.3f ms %.0f TF/s\n", name_of<T>(), Z, H,
              S, D, dense_sdd, dense_flops / dense_sdd / 1e9, dense_dsd, dense_flops / dense_dsd / 1e9);
  for (int block : {16, 32, 64, 128})
    for (double density : {0.1, 0.25, 0.5}) {
      const int nb = S / block;
      const auto layout = random_layout(1, nb, nb, density, true, false, rng);
      std::vector<int64_t> all(size_t(H) * nb * nb);
      for (int hh = 0; hh < H; ++hh) std::copy(layout.begin(), layout.end(), all.begin() + size_t(hh) * nb * nb);
      Tables tab(bsmm::build_tables(all.data(), H, nb, nb, block));
      DevBuf<T> sp(size_t(Z) * tab.host.nnz * block * block);
      bsmm::SddParams ps;
      ps.kind = kind_of<T>(); ps.Z = Z; ps.layout = tab.view(); ps.K = D; ps.a_kmajor = true; ps.b_kmajor = true;
      ps.a = q.p; ps.b = k.p; ps.c = sp.p; ps.tiles = tab.by_row();
      bsmm::DxdParams pd;
      pd.kind = kind_of<T>(); pd.Z = Z; pd.layout = tab.view(); pd.M = S; pd.K = S; pd.N = D;
      pd.s = sp.p; pd.b = k.p; pd.c = o.p; pd.tiles = tab.by_row();
      const float t_sdd = median_ms([&] { bsmm::launch_sdd(ps, nullptr); });
      const float t_dsd = median_ms([&] { bsmm::launch_dxd(pd, nullptr); });
      DS_CUDA_CHECK(cudaDeviceSynchronize());
      const double flops = 2.0 * Z * double(tab.host.nnz) * block * block * D;
      const double f_sdd = flops / t_sdd / 1e9, f_dsd = flops / t_dsd / 1e9;
      const double r_sdd = f_sdd / (dense_flops / dense_sdd / 1e9), r_dsd = f_dsd / (dense_flops / dense_dsd / 1e9);
      std::printf("%s blk%-3d density %.3f | sdd %.3f ms %4.0f TF/s x%.2f of dense | dsd %.3f ms %4.0f TF/s x%.2f of dense\n",
                  name_of<T>(), block, double(tab.host.nnz) / (double(H) * nb * nb), t_sdd, f_sdd, r_sdd, t_dsd, f_dsd,
                  r_dsd);
    }
}

int time_all() {
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  time_type<__nv_bfloat16>(handle);
  time_type<__half>(handle);
  CUBLAS_CHECK(cublasDestroy(handle));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "check";
  try {
    if (mode == "check") return check_all();
    if (mode == "time") return time_all();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  std::fprintf(stderr, "usage: blocksparse_standalone check | time\n");
  return 2;
}
