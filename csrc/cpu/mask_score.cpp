// CPU kernel of mask_score (schema: csrc/ops.cpp, reference: sharpzo_ext/ops/reference.py).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/moments.h"
#include "sparse_zscore.h"

namespace sharpzo {
namespace {

template <typename w_t, typename grad_t, typename out_t>
SHARPZO_CPU_CLONES void score_range(const w_t* __restrict w, const grad_t* __restrict grad,
                                    out_t* __restrict out, Moments m, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const double wi = static_cast<double>(w[i]);
    out[i] = static_cast<out_t>(wi * wi * zscore(std::abs(static_cast<double>(grad[i])), m));
  }
}

template <typename w_t, typename grad_t, typename out_t>
void mask_score_typed(const MaskScoreJob& job) {
  const int64_t n = job.w.numel();
  const w_t* w = job.w.const_data_ptr<w_t>();
  const grad_t* grad = job.grad.const_data_ptr<grad_t>();
  out_t* out = job.out.mutable_data_ptr<out_t>();
  const auto magnitude = [grad](int64_t i) { return std::abs(static_cast<double>(grad[i])); };
  const Moments m = moments_cpu(magnitude, n, job.eps);
  check_finite_data("mask_score", job.check_finite, m.finite, "grad", job.grad);
  if (job.check_finite) {
    const auto value = [w](int64_t i) { return static_cast<double>(w[i]); };
    check_finite_data("mask_score", true, all_finite_cpu(value, n), "w",
                      job.w);
  }
  if (!m.finite) {
    std::fill(out, out + n, std::numeric_limits<out_t>::quiet_NaN());
    return;
  }
  at::parallel_for(0, n, 1 << 15, [&](int64_t begin, int64_t end) {
    score_range(w, grad, out, m, begin, end);
  });
}

void launch_cpu(const MaskScoreJob& job) {
  dispatch_mask_score(job, [&]<typename w_t, typename grad_t, typename out_t>() {
    mask_score_typed<w_t, grad_t, out_t>(job);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CPU, m) {
  m.impl("mask_score", &mask_score_kernel<launch_cpu>);
}

}  // namespace sharpzo
