// Standalone check-then-time harness of the fused block-sparse attention kernels (no Torch), so kernel
// iterations can be built on the CPU machine with nvcc and run on the GPU machine in seconds.
//   bsa_standalone check            every case against a float64 host reference (exit 1 on failure)
//   bsa_standalone time [B H S D block density [nm]]  forward and backward TFLOP/s on present blocks
//                                                (nm 12 / 24: dynamic 1:2 / 2:4 on a dense layout of block 64)
// The Torch-level tests (tests/sparse_attention, label gpu) and benchmarks/bench_sparse_attention.py
// are the real gates; this harness is the kernel developer's loop.
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
#include "sparse_attention/fused/bsa_params.h"
#include "sparse_attention/fused/bsa_tables.h"

using namespace ds;

namespace {

template <typename T> T to_t(float v);
template <> __half to_t<__half>(float v) { return __float2half_rn(v); }
template <> __nv_bfloat16 to_t<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <typename T> float from_t(T v);
template <> float from_t<__half>(__half v) { return __half2float(v); }
template <> float from_t<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

struct Case {
  int B, H, S, D, block, layout_heads;
  double density;
  bool causal, kp, am, rpe, empty_row;
  int s_valid;
  bool bf16;
  int nm = 0;  // 0, 12 (1:2) or 24 (2:4): dense (or, with causal, lower-triangular) layout of 64-blocks
};

template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t n_) : n(n_) { DS_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T))); }
  ~DevBuf() { cudaFree(p); }
  void up(const std::vector<T>& h) { DS_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> down() const {
    std::vector<T> h(n);
    DS_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

std::vector<int64_t> random_layout(int LH, int nb, double density, bool causal, bool empty_row, std::mt19937& rng) {
  std::vector<int64_t> L(size_t(LH) * nb * nb, 0);
  std::uniform_real_distribution<double> u(0, 1);
  for (int h = 0; h < LH; ++h)
    for (int r = 0; r < nb; ++r) {
      for (int c = 0; c < nb; ++c) {
        if (causal && c > r) continue;
        L[(size_t(h) * nb + r) * nb + c] = (u(rng) < density || c == r) ? 1 : 0;
      }
    }
  if (empty_row && nb > 1)
    for (int h = 0; h < LH; ++h)
      for (int c = 0; c < nb; ++c) L[(size_t(h) * nb + 1) * nb + c] = 0;
  return L;
}

struct Tables {
  bsa::HostTables host;
  std::vector<int32_t> q_order, k_order;
  DevBuf<int32_t> qp, qc, kp, kc, qo, ko;
  DevBuf<uint32_t> qm, km;
  Tables(const std::vector<int64_t>& L, int LH, int nb, int block, int B, int H)
      : host(bsa::build_tables(L.data(), LH, nb, block)),
        q_order(bsa::build_order(host.q, LH, host.num_tiles, B, H)),
        k_order(bsa::build_order(host.k, LH, host.num_tiles, B, H)),
        qp(host.q.ptr.size()), qc(host.q.chunk.size()), kp(host.k.ptr.size()), kc(host.k.chunk.size()),
        qo(q_order.size()), ko(k_order.size()), qm(host.q.mask.size()), km(host.k.mask.size()) {
    qp.up(host.q.ptr); qc.up(host.q.chunk); qm.up(host.q.mask);
    kp.up(host.k.ptr); kc.up(host.k.chunk); km.up(host.k.mask);
    qo.up(q_order); ko.up(k_order);
  }
  void fill(bsa::Params& p) const {
    p.num_tiles = host.num_tiles;
    p.chunk = host.chunk;
    p.q_tiles = {qp.p, qc.p, qm.p, qo.p};
    p.k_tiles = {kp.p, kc.p, km.p, ko.p};
  }
};

double rel_err(const std::vector<double>& ref, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(got[i]) - ref[i];
    if (std::isnan(got[i])) return INFINITY;
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

template <typename T>
bool run_check(const Case& c, std::mt19937& rng) {
  const int nb = c.S / c.block;
  const int64_t n = int64_t(c.B) * c.H * c.S * c.D;
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<T> hq(n), hk(n), hv(n), hdo(n);
  for (auto* vec : {&hq, &hk, &hv, &hdo})
    for (auto& x : *vec) x = to_t<T>(nd(rng));
  if (c.nm) {
    // Integer q, k: every score is exact in fp32 and float64, so both select the same entries, ties
    // (frequent with small integers) broken by index in both.
    std::uniform_int_distribution<int> ui(-2, 2);
    for (auto* vec : {&hq, &hk})
      for (auto& x : *vec) x = to_t<T>(float(ui(rng)));
  }
  auto L = c.nm ? random_layout(c.layout_heads, nb, 1.0, c.causal, false, rng)
                : random_layout(c.layout_heads, nb, c.density, c.causal, c.empty_row, rng);
  std::vector<float> kpad, abias, rpe;
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  if (c.kp) {  // with N:M only 0 / -inf, so the selection stays exact
    kpad.resize(size_t(c.B) * c.S);
    for (auto& x : kpad) x = (u(rng) > 0.8f) ? -INFINITY : (c.nm ? 0.f : u(rng));
  }
  if (c.am) { abias.resize(size_t(c.S) * c.S); for (auto& x : abias) x = u(rng); }
  if (c.rpe) { rpe.resize(size_t(c.B) * c.H * c.S * c.S); for (auto& x : rpe) x = u(rng); }
  const float scale = 1.f / std::sqrt(float(c.D));

  // float64 reference
  std::vector<double> ro(n, 0), rdq(n, 0), rdk(n, 0), rdv(n, 0);
  std::vector<double> srow(c.S), prow(c.S), dprow(c.S);
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h) {
      const int lh = h % c.layout_heads;
      const int64_t base = (int64_t(b) * c.H + h) * c.S * c.D;
      auto at = [&](const std::vector<T>& x, int s, int d) { return double(from_t<T>(x[base + int64_t(s) * c.D + d])); };
      for (int i = 0; i < c.s_valid; ++i) {
        double mx = -INFINITY;
        for (int j = 0; j < c.S; ++j) {
          bool ok = L[(size_t(lh) * nb + i / c.block) * nb + j / c.block] && j < c.s_valid;
          if (c.causal && j > i && i / c.block == j / c.block) ok = false;
          double s = -INFINITY;
          if (ok) {
            double dot = 0;
            for (int d = 0; d < c.D; ++d) dot += at(hq, i, d) * at(hk, j, d);
            s = dot * scale;
            if (c.kp) s += kpad[size_t(b) * c.S + j];
            if (c.am) s += abias[size_t(i) * c.S + j];
            if (c.rpe) s += rpe[((size_t(b) * c.H + h) * c.S + i) * c.S + j];
          }
          srow[j] = s;
        }
        if (c.nm) {  // keep the N largest of each group of M consecutive keys (ties -> lower index)
          const int gm = c.nm % 10, gn = c.nm / 10;
          std::vector<double> kept(srow.begin(), srow.end());
          for (int j0 = 0; j0 < c.S; j0 += gm)
            for (int i2 = j0; i2 < j0 + gm; ++i2) {
              int rank = 0;
              for (int j2 = j0; j2 < j0 + gm; ++j2)
                if (j2 != i2) rank += srow[j2] > srow[i2] || (srow[j2] == srow[i2] && j2 < i2);
              if (rank >= gn) kept[i2] = -INFINITY;
            }
          srow = kept;
        }
        for (int j = 0; j < c.S; ++j) mx = std::max(mx, srow[j]);
        if (mx == -INFINITY) continue;  // nothing to attend: zeros
        double sum = 0;
        for (int j = 0; j < c.S; ++j) sum += (prow[j] = std::exp(srow[j] - mx));
        double delta = 0;
        for (int j = 0; j < c.S; ++j) {
          prow[j] /= sum;
          double dp = 0;
          for (int d = 0; d < c.D; ++d) dp += at(hdo, i, d) * at(hv, j, d);
          dprow[j] = dp;
          delta += prow[j] * dp;
        }
        for (int j = 0; j < c.S; ++j) {
          if (prow[j] == 0) continue;
          const double ds = prow[j] * (dprow[j] - delta);
          for (int d = 0; d < c.D; ++d) {
            ro[base + int64_t(i) * c.D + d] += prow[j] * at(hv, j, d);
            rdv[base + int64_t(j) * c.D + d] += prow[j] * at(hdo, i, d);
            rdq[base + int64_t(i) * c.D + d] += scale * ds * at(hk, j, d);
            rdk[base + int64_t(j) * c.D + d] += scale * ds * at(hq, i, d);
          }
        }
      }
    }

  DevBuf<T> q(n), k(n), v(n), o(n), dout(n), dq(n), dk(n), dv(n);
  DevBuf<float> lse(size_t(c.B) * c.H * c.S), delta(size_t(c.B) * c.H * c.S);
  DevBuf<float> dkp(kpad.size()), dam(abias.size()), drpe(rpe.size());
  q.up(hq); k.up(hk); v.up(hv); dout.up(hdo);
  if (c.kp) dkp.up(kpad);
  if (c.am) dam.up(abias);
  if (c.rpe) drpe.up(rpe);
  Tables tab(L, c.layout_heads, nb, c.block, c.B, c.H);
  bsa::Params p;
  p.kind = c.bf16 ? ScalarKind::BF16 : ScalarKind::F16;
  p.B = c.B; p.H = c.H; p.S = c.S; p.D = c.D; p.s_valid = c.s_valid; p.block = c.block;
  p.layout_heads = c.layout_heads; p.causal_diagonal = c.causal; p.scale = scale; p.nm = c.nm;
  p.q = q.p; p.k = k.p; p.v = v.p; p.o = o.p; p.lse = lse.p;
  p.q_bs = int64_t(c.H) * c.S * c.D; p.q_hs = int64_t(c.S) * c.D; p.q_rs = c.D;
  p.k_bs = p.q_bs; p.k_hs = p.q_hs; p.k_rs = p.q_rs; p.o_bs = p.q_bs; p.o_hs = p.q_hs; p.o_rs = p.q_rs;
  p.key_padding = c.kp ? dkp.p : nullptr; p.attn_bias = c.am ? dam.p : nullptr; p.rpe = c.rpe ? drpe.p : nullptr;
  p.dout = dout.p; p.delta = delta.p; p.dq = dq.p; p.dk = dk.p; p.dv = dv.p;
  tab.fill(p);
  auto f = [](const std::vector<T>& x) { std::vector<float> r(x.size()); for (size_t i = 0; i < x.size(); ++i) r[i] = from_t<T>(x[i]); return r; };
  // bf16 keeps 8 bits of mantissa (u = 2^-8 = 3.9e-3), fp16 11 (4.9e-4). Inputs are rounded the same in
  // the reference; the kernel also rounds P and dS to the input dtype before the second product, so
  // errors of a few u are expected: allow 4u (forward) and 8u (gradients, two rounded products).
  const double uround = c.bf16 ? 3.9e-3 : 4.9e-4;
  bool ok = true;
  for (int path = 0; path < 2; ++path) {
    // Poison outputs: every element must be written.
    T* outs[4] = {o.p, dq.p, dk.p, dv.p};
    for (T* ptr : outs) DS_CUDA_CHECK(cudaMemset(ptr, 0x7f, n * sizeof(T)));
    if (path == 0) bsa::launch_forward(p, nullptr); else bsa::launch_forward_sm90(p, nullptr);
    if (path == 0) bsa::launch_backward(p, nullptr); else bsa::launch_backward_sm90(p, nullptr);
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    const double eo = rel_err(ro, f(o.down())), eq = rel_err(rdq, f(dq.down())), ek = rel_err(rdk, f(dk.down())),
                 ev = rel_err(rdv, f(dv.down()));
    const bool pok = eo < 4 * uround && eq < 8 * uround && ek < 8 * uround && ev < 8 * uround;
    ok = ok && pok;
    std::printf("%s %s B%d H%d S%-4d D%-3d blk%-3d LH%d dens%.2f %s%s%s%s%s%s sv%-4d | o %.2e dq %.2e dk %.2e dv %.2e\n",
                pok ? "ok  " : "FAIL", path ? "sm90" : "sm80", c.B, c.H, c.S, c.D, c.block, c.layout_heads, c.density,
                c.bf16 ? "bf16" : "fp16", c.causal ? " causal" : "", c.kp ? " kp" : "", c.am ? " am" : "",
                c.rpe ? " rpe" : "", c.nm == 12 ? " nm1:2" : c.nm == 24 ? " nm2:4" : "", c.s_valid, eo, eq, ek, ev);
  }
  return ok;
}

int check_all() {
  std::mt19937 rng(1234);
  std::vector<Case> cases;
  for (int D : {32, 64, 128})
    for (int block : {16, 32, 64, 128})
      for (bool bf : {true, false}) {
        const int S = block == 128 ? 384 : 320;  // 320: not a multiple of the 64-row tile for blocks 16/32
        cases.push_back({2, 3, S, D, block, 1, 0.3, false, false, false, false, false, S, bf});
      }
  // masks, causal, rpe, layout per head, padding, empty rows, batch 1
  cases.push_back({1, 2, 208, 64, 16, 2, 0.4, true, false, false, false, false, 208, true});
  cases.push_back({2, 2, 192, 64, 32, 1, 0.5, false, true, false, false, false, 192, true});
  cases.push_back({2, 2, 192, 64, 16, 2, 0.5, false, false, true, false, false, 192, false});
  cases.push_back({1, 2, 128, 32, 16, 1, 0.5, false, false, false, true, false, 128, true});
  cases.push_back({2, 2, 256, 64, 64, 1, 0.5, true, true, true, true, false, 256, true});
  cases.push_back({2, 2, 240, 128, 16, 1, 0.3, false, false, false, false, false, 231, true});
  cases.push_back({1, 2, 256, 64, 128, 1, 0.5, false, false, false, false, false, 200, false});
  cases.push_back({2, 2, 256, 64, 16, 2, 0.3, false, false, false, false, true, 256, true});
  cases.push_back({1, 1, 1024, 64, 16, 1, 0.1, false, false, false, false, false, 1024, true});
  // Dynamic N:M on a dense / causal layout of 64-blocks: both patterns, head sizes, masks, padding.
  for (int nm : {12, 24})
    for (int D : {32, 64, 128}) {
      cases.push_back({2, 2, 256, D, 64, 1, 1.0, false, false, false, false, false, 256, true, nm});
      cases.push_back({1, 2, 192, D, 64, 1, 1.0, true, false, false, false, false, 181, D == 64, nm});
    }
  cases.push_back({2, 2, 256, 64, 64, 1, 1.0, false, true, false, false, false, 250, true, 24});
  int fails = 0;
  for (const auto& c : cases) fails += c.bf16 ? !run_check<__nv_bfloat16>(c, rng) : !run_check<__half>(c, rng);
  std::printf("%d/%zu cases passed\n", int(cases.size()) - fails, cases.size());
  return fails ? 1 : 0;
}

int time_one(int B, int H, int S, int D, int block, double density, int nm = 0) {
  std::mt19937 rng(7);
  const int nb = S / block;
  const int64_t n = int64_t(B) * H * S * D;
  std::vector<__nv_bfloat16> h(n);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& x : h) x = __float2bfloat16_rn(nd(rng));
  DevBuf<__nv_bfloat16> q(n), k(n), v(n), o(n), dout(n), dq(n), dk(n), dv(n);
  q.up(h); k.up(h); v.up(h); dout.up(h);
  DevBuf<float> lse(size_t(B) * H * S), delta(size_t(B) * H * S);
  auto L = random_layout(1, nb, density, false, false, rng);
  Tables tab(L, 1, nb, block, B, H);
  bsa::Params p;
  p.kind = ScalarKind::BF16; p.B = B; p.H = H; p.S = S; p.D = D; p.s_valid = S; p.block = block; p.layout_heads = 1;
  p.scale = 1.f / std::sqrt(float(D)); p.nm = nm;
  p.q = q.p; p.k = k.p; p.v = v.p; p.o = o.p; p.lse = lse.p;
  p.q_bs = int64_t(H) * S * D; p.q_hs = int64_t(S) * D; p.q_rs = D;
  p.k_bs = p.q_bs; p.k_hs = p.q_hs; p.k_rs = D; p.o_bs = p.q_bs; p.o_hs = p.q_hs; p.o_rs = D;
  p.dout = dout.p; p.delta = delta.p; p.dq = dq.p; p.dk = dk.p; p.dv = dv.p;
  tab.fill(p);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0); cudaEventCreate(&e1);
  auto timeit = [&](auto fn) {
    for (int i = 0; i < 3; ++i) fn();
    std::vector<float> ms;
    for (int i = 0; i < 20; ++i) {
      cudaEventRecord(e0); fn(); cudaEventRecord(e1); cudaEventSynchronize(e1);
      float t; cudaEventElapsedTime(&t, e0, e1); ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const float tf80 = timeit([&] { bsa::launch_forward(p, nullptr); });
  const float tf = timeit([&] { bsa::launch_forward_sm90(p, nullptr); });
  const float tb80 = timeit([&] { bsa::launch_backward(p, nullptr); });
  const float tb = timeit([&] { bsa::launch_backward_sm90(p, nullptr); });
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  const double present = double(tab.host.present_blocks) / (double(nb) * nb);
  const double flops_f = 4.0 * B * H * double(S) * S * D * present;
  std::printf("%sB%d H%d S%d D%d blk%d density %.3f | fwd sm80 %.3f ms %.0f TF/s, sm90 %.3f ms %.0f TF/s | bwd sm80 %.3f ms %.0f, sm90 %.3f ms %.0f TF/s\n",
              nm == 12 ? "nm1:2 " : nm == 24 ? "nm2:4 " : "", B, H, S, D, block, present, tf80, flops_f / tf80 / 1e9, tf, flops_f / tf / 1e9, tb80,
              2.5 * flops_f / tb80 / 1e9, tb, 2.5 * flops_f / tb / 1e9);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "check";
  try {
    if (mode == "check") return check_all();
    if (mode == "time") {
      if (argc == 8 || argc == 9)
        return time_one(std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]), std::atoi(argv[5]),
                        std::atoi(argv[6]), std::atof(argv[7]), argc == 9 ? std::atoi(argv[8]) : 0);
      for (int D : {64, 128})
        for (int block : {16, 32, 64, 128})
          for (double dens : {0.1, 0.3, 1.0}) time_one(16384 / 4096 * (D == 64 ? 1 : 1), D == 64 ? 16 : 8, 4096, D, block, dens);
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  std::fprintf(stderr, "usage: bsa_standalone check | time [B H S D block density [nm]]\n");
  return 2;
}
