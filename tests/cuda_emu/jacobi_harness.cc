// Runs the CUDA kernels of jacobi_eigh on the host through cuda_emu.h and checks that the result
// is an eigen-decomposition: V orthogonal, A V = V Λ, Λ ascending — no reference solver needed.
// Usage: jacobi_harness  (exit code 0 when every case passes; one line per case on stdout)
#include "cuda_emu.h"

// clang-format off
#include "jacobi_eigh/jacobi_kernels.cuh"
// clang-format on

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>

using effrank_fast::jacobi::BlockedArgs;
using effrank_fast::jacobi::Layout;
using effrank_fast::jacobi::make_layout;

namespace {

template <typename T>
std::vector<T> make_matrix(int n, const std::string& kind, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> a(static_cast<size_t>(n) * n);
  if (kind == "random") {
    for (int i = 0; i < n; ++i)
      for (int j = 0; j <= i; ++j) a[i * n + j] = a[j * n + i] = g(rng);
  } else {  // "warm": diag(i^-1.2) plus a symmetric perturbation of 1e-3 relative
    for (int i = 0; i < n; ++i)
      for (int j = 0; j <= i; ++j) {
        const double v = 1e-3 * g(rng) / std::sqrt(double(n));
        a[i * n + j] = a[j * n + i] = v + (i == j ? std::pow(i + 1.0, -1.2) : 0.0);
      }
  }
  return std::vector<T>(a.begin(), a.end());
}

template <typename T>
bool check(const char* what, int n, const std::vector<T>& a, const T* w, const T* v, double off, int64_t sweeps) {
  const double u = sizeof(T) == 8 ? 1.1e-16 : 6e-8;
  double norm = 0, resid = 0, orth = 0;
  for (int i = 0; i < n * n; ++i) norm = std::max(norm, std::abs(double(a[i])));
  norm *= n;  // ≥ ‖A‖₂
  bool sorted = true;
  for (int i = 1; i < n; ++i) sorted &= !(w[i] < w[i - 1]);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      double av = 0, vv = 0;
      for (int l = 0; l < n; ++l) {
        av += double(a[i * n + l]) * double(v[l * n + j]);
        vv += double(v[l * n + i]) * double(v[l * n + j]);
      }
      resid = std::max(resid, std::abs(av - double(v[i * n + j]) * double(w[j])));
      orth = std::max(orth, std::abs(vv - (i == j ? 1.0 : 0.0)));
    }
  }
  resid /= norm;
  const bool ok = sorted && std::isfinite(resid) && resid <= 8 * n * u && orth <= 16 * n * u && sweeps >= 0 && sweeps <= 30;
  std::printf("%-8s n=%3d %s sweeps=%lld off=%.1e resid=%.1e orth=%.1e %s\n", what, n, sizeof(T) == 8 ? "f64" : "f32",
              static_cast<long long>(sweeps), off, resid, orth, ok ? "ok" : "FAIL");
  return ok;
}

template <typename T>
bool run_small(int n, int batch, unsigned threads, const std::string& kind) {
  const int npad = n + n % 2;
  std::vector<T> in;
  std::vector<std::vector<T>> mats;
  for (int b = 0; b < batch; ++b) {
    mats.push_back(make_matrix<T>(n, kind, 17 + b));
    in.insert(in.end(), mats.back().begin(), mats.back().end());
  }
  std::vector<T> w(static_cast<size_t>(batch) * n, T(NAN)), v(static_cast<size_t>(batch) * n * n, T(NAN));
  std::vector<double> off(batch);
  std::vector<int64_t> sweeps(batch);
  const size_t smem = (2 * size_t(npad) * npad + 3 * (npad / 2)) * sizeof(T) + 2 * (npad / 2) * sizeof(int);
  emu_launch(batch, threads, smem, [&] {
    effrank_fast::jacobi::jacobi_small_kernel<T>(in.data(), n, npad, 30, 8 * n * 1.1e-16 * (sizeof(T) == 8 ? 1 : 5e8),
                                                 w.data(), v.data(), off.data(), sweeps.data());
  });
  bool ok = true;
  for (int b = 0; b < batch; ++b)
    ok &= check("small", n, mats[b], w.data() + b * n, v.data() + size_t(b) * n * n, off[b], sweeps[b]);
  return ok;
}

template <typename T>
bool run_blocked(int n, unsigned threads, const std::string& kind) {
  const Layout L = make_layout(n);
  const int max_sweeps = 30;
  std::vector<T> a = make_matrix<T>(n, kind, 5), A(size_t(L.npad) * L.npad), V(size_t(L.npad) * L.npad),
                 Q(size_t(L.pairs) * L.s * L.s), w(n, T(NAN)), v(size_t(n) * n, T(NAN));
  std::vector<double> red(2 + max_sweeps, 0.0);
  std::vector<int> rank(n);
  double off = -1;
  int64_t sweeps = -1;
  BlockedArgs<T> args{a.data(), A.data(), V.data(), Q.data(), red.data(), rank.data(), w.data(), v.data(),
                      &off,     &sweeps,  L,        max_sweeps, sizeof(T) == 8 ? n * 2.2e-16 : n * 1.2e-7};
  emu_launch(1, threads, 0, [&] { effrank_fast::jacobi::jacobi_blocked_kernel<T>(args); });
  return check("blocked", n, a, w.data(), v.data(), off, sweeps);
}

}  // namespace

int main() {
  bool ok = true;
  ok &= run_small<double>(1, 1, 32, "random");
  ok &= run_small<double>(7, 3, 32, "random");
  ok &= run_small<float>(40, 2, 64, "random");
  ok &= run_small<double>(64, 1, 256, "warm");
  ok &= run_blocked<double>(5, 32, "random");    // m = 2: one pair, inner sweeps only
  ok &= run_blocked<double>(70, 64, "warm");     // m = 6 (npad 96): padding, 3 pairs, 5 rounds
  ok &= run_blocked<float>(65, 32, "random");
  ok &= run_blocked<double>(100, 64, "random");
  std::printf(ok ? "ALL OK\n" : "FAILED\n");
  return ok ? 0 : 1;
}
