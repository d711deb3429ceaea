// CPU Gram matrix M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ): only the lower triangle is computed, then
// mirrored, so M is exactly symmetric at ~½ of a full GEMM's flops. Preferred path: the rows are
// split over the threads, each running a sequential SYRK (syrk_cpu.h) into a private accumulator,
// with the dtype conversion, √w scaling and centring fused into one pass per row chunk; an input
// that needs none of them goes to the kernel as it is, without a copy. Without a sequential kernel,
// the threaded BLAS SYRK (or blocked upper-triangle GEMMs) runs per row chunk.
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "common.h"
#include "gram/syrk_cpu.h"

namespace effrank_fast {
namespace {

constexpr int64_t kChunkRows = 4096;
// Rows per threaded-BLAS call on the path without a sequential kernel (see gram_impl).
constexpr int64_t kBlasChunkRows = 256;
// Leaf of the blocked fallback: diagonal blocks up to this size run as one full GEMM.
constexpr int64_t kLeafCols = 256;

// MKL's SYRK as libtorch_cpu exports it (Fortran calling convention). torch does not wrap SYRK, so
// it is looked up at run time; absent (another BLAS), the blocked GEMMs serve. The integers are
// passed as 64-bit values below 2³¹: read right by an ILP64 MKL (torch's) and, little-endian, by
// an LP64 one.
using SyrkF = void (*)(const char*, const char*, const int64_t*, const int64_t*, const float*, const float*,
                       const int64_t*, const float*, float*, const int64_t*);
using SyrkD = void (*)(const char*, const char*, const int64_t*, const int64_t*, const double*, const double*,
                       const int64_t*, const double*, double*, const int64_t*);

template <typename acc_t>
void* syrk_symbol() {
  static void* sym = dlsym(RTLD_DEFAULT, std::is_same<acc_t, float>::value ? "mkl_blas_ssyrk" : "mkl_blas_dsyrk");
  return sym;
}

// out (row-major [d, d]) lower triangle += xᵀ x for a row-major x [rows, d] (contiguous rows).
// Read as column-major, x is the d×rows matrix A and the row-major lower triangle of out is the
// column-major upper triangle of A·Aᵀ: SYRK("U", "N").
template <typename acc_t>
bool syrk_lower(at::Tensor& out, const at::Tensor& x, bool first) {
  void* sym = syrk_symbol<acc_t>();
  const int64_t rows = x.size(0), d = x.size(1);
  // size-1 dimensions may carry any stride (torch calls such tensors contiguous): read them as dense
  const int64_t col_stride = d == 1 ? 1 : x.stride(1);
  const int64_t lda = rows == 1 ? d : x.stride(0);
  if (sym == nullptr || rows > INT32_MAX || d > INT32_MAX || col_stride != 1 || lda < d || lda > INT32_MAX) {
    return false;
  }
  const int64_t n = d, k = rows, ldc = d;
  const acc_t one = 1, beta = first ? 0 : 1;
  if constexpr (std::is_same<acc_t, float>::value) {
    reinterpret_cast<SyrkF>(sym)("U", "N", &n, &k, &one, x.data_ptr<float>(), &lda, &beta, out.data_ptr<float>(), &ldc);
  } else {
    reinterpret_cast<SyrkD>(sym)("U", "N", &n, &k, &one, x.data_ptr<double>(), &lda, &beta, out.data_ptr<double>(),
                                 &ldc);
  }
  return true;
}

// out's upper triangle += xᵀ x by recursion: the off-diagonal block is one GEMM, the two diagonal
// blocks recurse down to kLeafCols (flops ≈ ½ + ½^L/2 of the full product after L levels).
void blocked_upper(at::Tensor& out, const at::Tensor& x, int64_t lo, int64_t hi) {
  const int64_t s = hi - lo;
  if (s <= kLeafCols) {
    at::Tensor xs = x.narrow(1, lo, s);
    out.narrow(0, lo, s).narrow(1, lo, s).addmm_(xs.t(), xs);
    return;
  }
  const int64_t mid = lo + ((s / 2 + 63) / 64) * 64;  // keep the blocks multiples of 64 columns
  blocked_upper(out, x, lo, mid);
  out.narrow(0, lo, mid - lo).narrow(1, mid, hi - mid).addmm_(x.narrow(1, lo, mid - lo).t(), x.narrow(1, mid, hi - mid));
  blocked_upper(out, x, mid, hi);
}

// dst[r, :] = (src[r, :] − μ) · √w_r in acc precision, for a source of any float dtype and strides.
template <typename acc_t, typename src_t>
void prepare_rows(acc_t* dst, const src_t* src, int64_t s0, int64_t s1, const acc_t* sqrt_w, const acc_t* mu,
                  int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; ++r) {
    const src_t* in = src + r * s0;
    acc_t* out = dst + r * d;
    const acc_t s = sqrt_w ? sqrt_w[r] : acc_t(1);
    if (mu) {
      for (int64_t c = 0; c < d; ++c) out[c] = (static_cast<acc_t>(in[c * s1]) - mu[c]) * s;
    } else if (sqrt_w) {
      for (int64_t c = 0; c < d; ++c) out[c] = static_cast<acc_t>(in[c * s1]) * s;
    } else {
      for (int64_t c = 0; c < d; ++c) out[c] = static_cast<acc_t>(in[c * s1]);
    }
  }
}

// How many row ranges to give the sequential kernel (0: none usable, take the threaded BLAS).
// Each part has a private [d, d] accumulator, so the extra memory is capped.
int64_t row_parts(int64_t n, int64_t d, bool fp64) {
  if (!syrk_sequential_available(fp64)) return 0;
  constexpr int64_t kMinRowsPerPart = 256;
  constexpr double kExtraBytesCap = 256.0 * (1 << 20);
  int64_t parts = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(1, n / kMinRowsPerPart));
  const double bytes = static_cast<double>(d) * d * (fp64 ? 8 : 4);
  while (parts > 1 && (parts - 1) * bytes > kExtraBytesCap) --parts;
  return parts;
}

// c (row-major [d, d]) lower triangle = the SYRK of rows [lo, hi) of phi, √w-scaled and centred as
// given, by the sequential kernel (one thread's work item): read as it is where the kernel's layout
// allows (unit column stride, rows that do not overlap: an expanded tensor's stride-0 rows go
// through the copy), else converted per kChunkRows-row chunk into `buf`.
template <typename acc_t, typename src_t>
void syrk_row_range(acc_t* c, const at::Tensor& phi, const acc_t* sqrt_w, const acc_t* mu, int64_t lo, int64_t hi,
                    std::vector<acc_t>& buf) {
  const int64_t n = phi.size(0), d = phi.size(1), s0 = phi.stride(0), s1 = phi.stride(1);
  const src_t* base = phi.data_ptr<src_t>();
  const bool as_is = std::is_same<acc_t, src_t>::value && s1 == 1 && (s0 >= d || n == 1) && !sqrt_w && !mu;
  if (as_is) {
    const int64_t ldx = hi - lo == 1 ? d : s0;  // a single row may carry any row stride
    TORCH_CHECK(syrk_lower_sequential(reinterpret_cast<const acc_t*>(base) + lo * s0, hi - lo, d, ldx, c, d, false),
                "gram_native: the sequential SYRK refused its rows");
    return;
  }
  buf.resize(static_cast<size_t>(std::min(kChunkRows, hi - lo) * d));
  for (int64_t s = lo; s < hi; s += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, hi - s);
    prepare_rows<acc_t, src_t>(buf.data(), base + s * s0, s0, s1, sqrt_w ? sqrt_w + s : nullptr, mu, rows, d);
    TORCH_CHECK(syrk_lower_sequential(buf.data(), rows, d, d, c, d, s != lo),
                "gram_native: the sequential SYRK refused a chunk");
  }
}

// M's lower triangle from `parts` row ranges, one sequential SYRK stream per thread into private
// accumulators that are summed at the end (the two-level sum keeps the γ_n error model).
template <typename acc_t, typename src_t>
void gram_row_parallel(at::Tensor& out, const at::Tensor& phi, const acc_t* sqrt_w, const acc_t* mu, int64_t parts) {
  const int64_t n = phi.size(0), d = phi.size(1);
  std::vector<at::Tensor> acc(parts);
  acc[0] = out;
  for (int64_t p = 1; p < parts; ++p) acc[p] = at::empty({d, d}, out.options());
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    std::vector<acc_t> buf;
    for (int64_t p = p0; p < p1; ++p) {
      syrk_row_range<acc_t, src_t>(acc[p].data_ptr<acc_t>(), phi, sqrt_w, mu, n * p / parts, n * (p + 1) / parts, buf);
    }
  });
  for (int64_t p = 1; p < parts; ++p) out.add_(acc[p]);
}

template <typename acc_t>
void scale_chunk(acc_t* dst, const at::Tensor& src_acc, const acc_t* sqrt_w, const acc_t* mu, int64_t rows,
                 int64_t d) {
  const acc_t* src = src_acc.data_ptr<acc_t>();
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    prepare_rows<acc_t, acc_t>(dst + r0 * d, src + r0 * d, d, 1, sqrt_w ? sqrt_w + r0 : nullptr, mu, r1 - r0, d);
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
  at::Tensor sqrt_w = w_acc.defined() ? w_acc.sqrt() : at::Tensor();
  const acc_t* sqrt_w_ptr = sqrt_w.defined() ? sqrt_w.data_ptr<acc_t>() : nullptr;
  const acc_t* mu_ptr = mu.defined() ? mu.data_ptr<acc_t>() : nullptr;

  const int64_t parts = row_parts(n, d, std::is_same<acc_t, double>::value);
  if (parts > 0) {
    at::Tensor out = at::empty({d, d}, opts);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, phi.scalar_type(), "gram_native_cpu", [&] {
      gram_row_parallel<acc_t, scalar_t>(out, phi, sqrt_w_ptr, mu_ptr, parts);
    });
    return at::tril(out) + at::tril(out, -1).t();
  }

  // No sequential kernel here: the threaded BLAS (MKL's SYRK, else blocked GEMMs) per row chunk.
  at::Tensor out = at::zeros({d, d}, opts);
  const bool as_is = !center && !w_acc.defined() && phi.scalar_type() == acc && phi.stride(1) == 1;
  // The rows in chunks of kBlasChunkRows, each chunk's product added to M: a two-level sum whose
  // partial sums are at most that long. One BLAS call over all N rows sums up to N products per
  // entry in one chain: on one-signed features (tanh) at N = 20000, d = 16 that erred 41× past the
  // tight estimate of ops/gram/error.py, which assumes the short partial sums of a blocked kernel.
  const bool have_syrk = syrk_symbol<acc_t>() != nullptr && d <= INT32_MAX;
  const bool upper = !have_syrk;  // which triangle holds the result: SYRK fills the lower, the GEMMs the upper
  at::Tensor buf = at::empty({std::min(kBlasChunkRows, n), d}, opts);
  at::Tensor part = at::empty({d, d}, opts);
  for (int64_t s = 0; s < n; s += kBlasChunkRows) {
    const int64_t rows = std::min(kBlasChunkRows, n - s);
    at::Tensor chunk;
    if (as_is) {
      chunk = phi.narrow(0, s, rows);  // a view: the kernel reads it as it is
    } else if (!center && !w_acc.defined()) {
      chunk = phi.narrow(0, s, rows).to(acc).contiguous();
    } else {
      at::Tensor src = phi.narrow(0, s, rows).to(acc).contiguous();
      chunk = buf.narrow(0, 0, rows);
      scale_chunk<acc_t>(chunk.data_ptr<acc_t>(), src, sqrt_w_ptr ? sqrt_w_ptr + s : nullptr, mu_ptr, rows, d);
    }
    // Into a zeroed buffer, then added: BLAS kernels given β = 1 carry their register sums on
    // from C (measured: MKL's SYRK in 256-row calls still erred 20× past the estimate).
    part.zero_();
    if (have_syrk) {
      if (!syrk_lower<acc_t>(part, chunk, true)) {  // a view with strides SYRK does not take
        chunk = chunk.contiguous();
        TORCH_CHECK(syrk_lower<acc_t>(part, chunk, true), "gram_native: SYRK refused a dense chunk of shape ",
                    chunk.sizes(), " strides ", chunk.strides());
      }
    } else {
      blocked_upper(part, chunk, 0, d);
    }
    out.add_(part);
  }
  // Mirror the computed triangle: M must be exactly symmetric for the inertia count.
  if (upper) return at::triu(out) + at::triu(out, 1).t();
  return at::tril(out) + at::tril(out, -1).t();
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

// L Grams Φ_kᵀ diag(w) Φ_k (uncentred) of features of one shape into out [L, d, d], in one parallel
// region: the work items are (layer, row range) pairs, each a syrk_row_range as in gram_row_parallel
// into out[k] (range 0) or a private accumulator; then each out[k] gets its accumulators added in
// the same order and is mirrored. Every out[k] is bitwise what gram_native returns for Φ_k: one op
// call, one thread wake-up and no per-layer tril/add ops for what the monitor forms every step.
template <typename acc_t, typename src_t>
void gram_stack_rows(acc_t* out, const std::vector<at::Tensor>& phis, const acc_t* sqrt_w, int64_t parts,
                     acc_t* scratch) {
  const int64_t L = static_cast<int64_t>(phis.size()), n = phis[0].size(0), d = phis[0].size(1);
  const int64_t dd = d * d;
  at::parallel_for(0, L * parts, 1, [&](int64_t i0, int64_t i1) {
    std::vector<acc_t> buf;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t k = item / parts, p = item % parts;
      acc_t* c = p == 0 ? out + k * dd : scratch + (k * (parts - 1) + p - 1) * dd;
      syrk_row_range<acc_t, src_t>(c, phis[k], sqrt_w, nullptr, n * p / parts, n * (p + 1) / parts, buf);
    }
  });
  // out[k] += its accumulators (in gram_row_parallel's order), then the lower triangle mirrored
  at::parallel_for(0, L, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      acc_t* m = out + k * dd;
      for (int64_t p = 1; p < parts; ++p) {
        const acc_t* a = scratch + (k * (parts - 1) + p - 1) * dd;
        for (int64_t i = 0; i < d; ++i) {
          for (int64_t j = 0; j <= i; ++j) m[i * d + j] += a[i * d + j];
        }
      }
      for (int64_t i = 0; i < d; ++i) {
        for (int64_t j = 0; j < i; ++j) m[j * d + i] = m[i * d + j];
      }
    }
  });
}

template <typename acc_t>
void gram_stack_dispatch(at::Tensor& out, const std::vector<at::Tensor>& phis, const at::Tensor& sqrt_w, int64_t parts,
                         at::Tensor& scratch) {
  const acc_t* sw = sqrt_w.defined() ? sqrt_w.data_ptr<acc_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, phis[0].scalar_type(), "gram_stack_native_cpu", [&] {
    gram_stack_rows<acc_t, scalar_t>(out.data_ptr<acc_t>(), phis, sw, parts, scratch.data_ptr<acc_t>());
  });
}

at::Tensor gram_stack_native_cpu(at::TensorList phis, const std::optional<at::Tensor>& weights,
                                 at::ScalarType acc_dtype) {
  TORCH_CHECK(!phis.empty(), "phis must hold at least one [N, d] tensor");
  const at::Tensor& first = phis[0];
  EFF_CHECK_2D(first, "phis[0]");
  EFF_CHECK_FLOAT(first, "phis[0]");
  const int64_t n = first.size(0), d = first.size(1), L = static_cast<int64_t>(phis.size());
  TORCH_CHECK(n > 0 && d > 0, "phis[0] must be non-empty, got ", first.sizes());
  for (int64_t k = 1; k < L; ++k) {
    TORCH_CHECK(phis[k].sizes() == first.sizes() && phis[k].scalar_type() == first.scalar_type() &&
                    phis[k].device() == first.device(),
                "phis must share one shape, dtype and device: phis[", k, "] is ", phis[k].sizes(), " ",
                phis[k].scalar_type(), ", phis[0] ", first.sizes(), " ", first.scalar_type());
  }
  TORCH_CHECK(acc_dtype == at::kFloat || acc_dtype == at::kDouble, "acc_dtype must be float32 or float64, got ",
              acc_dtype);
  if (weights.has_value()) {
    TORCH_CHECK(weights->dim() == 1 && weights->size(0) == n, "weights must be [N] = [", n, "], got ",
                weights->sizes());
    EFF_CHECK_SAME_DEVICE(*weights, first, "weights", "phis");
  }
  const bool fp64 = acc_dtype == at::kDouble;
  const int64_t parts = row_parts(n, d, fp64);
  if (parts == 0) {  // no sequential kernel on this CPU: gram_native's threaded-BLAS path per layer
    std::vector<at::Tensor> each;
    for (const at::Tensor& phi : phis) each.push_back(gram_native_cpu(phi, weights, false, acc_dtype));
    return at::stack(each);
  }
  auto opts = first.options().dtype(acc_dtype);
  at::Tensor out = at::empty({L, d, d}, opts);
  at::Tensor scratch = at::empty({L * (parts - 1), d, d}, opts);
  at::Tensor sqrt_w = weights.has_value() ? weights->to(acc_dtype).contiguous().sqrt() : at::Tensor();
  std::vector<at::Tensor> list(phis.begin(), phis.end());
  if (fp64) {
    gram_stack_dispatch<double>(out, list, sqrt_w, parts, scratch);
  } else {
    gram_stack_dispatch<float>(out, list, sqrt_w, parts, scratch);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(effrank_fast, CPU, m) {
  m.impl("gram_native", &gram_native_cpu);
  m.impl("gram_stack_native", &gram_stack_native_cpu);
}

}  // namespace effrank_fast
