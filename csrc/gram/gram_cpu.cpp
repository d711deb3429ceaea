// CPU Gram matrix M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ) with the √w row scaling and the centring fused
// into one pass that builds each row chunk in the accumulation dtype, then one BLAS rank-k update
// per chunk. Low-precision features are upcast a chunk at a time, never as a whole.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "common.h"

namespace effrank_fast {
namespace {

constexpr int64_t kChunkRows = 4096;

template <typename acc_t>
void scale_chunk(acc_t* dst, const at::Tensor& src_acc, const acc_t* sqrt_w, const acc_t* mu, int64_t rows,
                 int64_t d) {
  const acc_t* src = src_acc.data_ptr<acc_t>();
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const acc_t s = sqrt_w ? sqrt_w[r] : acc_t(1);
      const acc_t* in = src + r * d;
      acc_t* out = dst + r * d;
      if (mu) {
        for (int64_t c = 0; c < d; ++c) out[c] = (in[c] - mu[c]) * s;
      } else {
        for (int64_t c = 0; c < d; ++c) out[c] = in[c] * s;
      }
    }
  });
}

template <typename acc_t>
at::Tensor gram_impl(const at::Tensor& phi, const std::optional<at::Tensor>& weights, bool center,
                     at::ScalarType acc) {
  const int64_t n = phi.size(0), d = phi.size(1);
  auto opts = phi.options().dtype(acc);
  at::Tensor w_acc;
  if (weights.has_value()) w_acc = weights->to(acc).contiguous();

  // Pass 1 (centring only): μ = Σ w φ / Σ w, accumulated per chunk in acc precision.
  at::Tensor mu;
  if (center) {
    at::Tensor total = at::zeros({d}, opts);
    acc_t mass = 0;
    for (int64_t s = 0; s < n; s += kChunkRows) {
      const int64_t rows = std::min(kChunkRows, n - s);
      at::Tensor chunk = phi.narrow(0, s, rows).to(acc);
      if (w_acc.defined()) {
        at::Tensor w = w_acc.narrow(0, s, rows);
        total.add_(at::mv(chunk.t(), w));
        mass += w.sum().item<acc_t>();
      } else {
        total.add_(chunk.sum(0));
        mass += static_cast<acc_t>(rows);
      }
    }
    TORCH_CHECK(mass > 0, "weights sum to zero: the weighted mean for center=True is undefined");
    mu = total.div_(mass).contiguous();
  }

  // Pass 2: chunk ← √w ⊙ (Φ_chunk − μ); M += chunkᵀ chunk.
  at::Tensor out = at::zeros({d, d}, opts);
  at::Tensor buf = at::empty({std::min(kChunkRows, n), d}, opts);
  at::Tensor sqrt_w = w_acc.defined() ? w_acc.sqrt() : at::Tensor();
  for (int64_t s = 0; s < n; s += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, n - s);
    at::Tensor src = phi.narrow(0, s, rows).to(acc).contiguous();
    at::Tensor dst = buf.narrow(0, 0, rows);
    scale_chunk<acc_t>(dst.data_ptr<acc_t>(), src, sqrt_w.defined() ? sqrt_w.data_ptr<acc_t>() + s : nullptr,
                       mu.defined() ? mu.data_ptr<acc_t>() : nullptr, rows, d);
    out.addmm_(dst.t(), dst);
  }
  // Mirror the upper triangle: M must be exactly symmetric for the inertia count.
  return at::triu(out) + at::triu(out, 1).t();
}

at::Tensor gram_native_cpu(const at::Tensor& phi, const std::optional<at::Tensor>& weights, bool center,
                           at::ScalarType acc_dtype) {
  EFF_CHECK_2D(phi, "phi");
  EFF_CHECK_FLOAT(phi, "phi");
  TORCH_CHECK(phi.size(0) > 0 && phi.size(1) > 0, "phi must be non-empty, got ", phi.sizes());
  TORCH_CHECK(acc_dtype == at::kFloat || acc_dtype == at::kDouble, "acc_dtype must be float32 or float64, got ",
              acc_dtype);
  if (weights.has_value()) {
    TORCH_CHECK(weights->dim() == 1 && weights->size(0) == phi.size(0), "weights must be [N] = [", phi.size(0),
                "], got ", weights->sizes());
    EFF_CHECK_SAME_DEVICE(*weights, phi, "weights", "phi");
  }
  if (acc_dtype == at::kDouble) return gram_impl<double>(phi, weights, center, acc_dtype);
  return gram_impl<float>(phi, weights, center, acc_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CPU, m) { m.impl("gram_native", &gram_native_cpu); }

}  // namespace effrank_fast
