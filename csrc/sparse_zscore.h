// Host-side code shared by the CPU and CUDA kernels of sparse_zscore, sparse_zscore_ and
// mask_score: argument checks, outputs, non-contiguous inputs, the job handed to a launcher.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace sharpzo {

// values = z-scores of g (mean and population std over all of g, Note [Deterministic
// reductions]) on the k entries of largest score, 0 elsewhere; mask marks those entries.
// Default score: |values| as stored. Ties go to the lower index (Note [Score order]). If g holds
// a NaN or an infinity, values are all NaN and the mask is all False.
struct SparseZScoreJob {
  at::Tensor g;       // contiguous input
  at::Tensor values;  // contiguous output, g's dtype (may be g itself: the in-place variant)
  at::Tensor mask;    // contiguous bool output
  at::Tensor score;   // contiguous, or undefined for the default score
  int64_t k = 1;
  double eps = 0;
  bool check_finite = true;
  const char* op = "sparse_zscore";
};

// score = w^2 * zscore(|grad|) with zscore over all of |grad|; float32 (float64 if w or grad is).
struct MaskScoreJob {
  at::Tensor w, grad;  // contiguous, same shape
  at::Tensor out;      // contiguous output
  double eps = 0;
  bool check_finite = true;
};

// With check_finite, refuses data that hold a NaN or an infinity (finite: false), naming the
// argument; `data` is what `name` refers to (Note [Overflowing statistics]). Device code calls it
// before it writes any output, so an in-place op leaves its input untouched.
void check_finite_data(const char* op, bool check_finite, bool finite, const char* name,
                       const at::Tensor& data);

using SparseZScoreLauncher = void (*)(const SparseZScoreJob& job);
using MaskScoreLauncher = void (*)(const MaskScoreJob& job);

std::tuple<at::Tensor, at::Tensor> sparse_zscore_with(const at::Tensor& g, int64_t k,
                                                      const std::optional<at::Tensor>& score,
                                                      double eps, bool check_finite,
                                                      SparseZScoreLauncher launch);
at::Tensor sparse_zscore_inplace_with(at::Tensor& g, int64_t k,
                                      const std::optional<at::Tensor>& score, double eps,
                                      bool check_finite, SparseZScoreLauncher launch);
at::Tensor mask_score_with(const at::Tensor& w, const at::Tensor& grad, double eps,
                           bool check_finite, MaskScoreLauncher launch);

// Calls typed.template operator()<w_t, grad_t, out_t>() for the job's dtypes (all pairs of
// float16, bfloat16, float32 and float64 for w and grad; out float32 or float64).
template <typename Typed>
void dispatch_mask_score(const MaskScoreJob& job, Typed&& typed) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.w.scalar_type(), "mask_score_w", [&] {
    using w_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.grad.scalar_type(), "mask_score_grad", [&] {
      if (job.out.scalar_type() == at::kDouble) {
        typed.template operator()<w_t, scalar_t, double>();
      } else {
        typed.template operator()<w_t, scalar_t, float>();
      }
    });
  });
}

// The kernels a device registers, e.g. m.impl("mask_score", &mask_score_kernel<launch_cpu>).
template <SparseZScoreLauncher launch>
std::tuple<at::Tensor, at::Tensor> sparse_zscore_kernel(const at::Tensor& g, int64_t k,
                                                        const std::optional<at::Tensor>& score,
                                                        double eps, bool check_finite) {
  return sparse_zscore_with(g, k, score, eps, check_finite, launch);
}

template <SparseZScoreLauncher launch>
at::Tensor sparse_zscore_inplace_kernel(at::Tensor& g, int64_t k,
                                        const std::optional<at::Tensor>& score, double eps,
                                        bool check_finite) {
  return sparse_zscore_inplace_with(g, k, score, eps, check_finite, launch);
}

template <MaskScoreLauncher launch>
at::Tensor mask_score_kernel(const at::Tensor& w, const at::Tensor& grad, double eps,
                             bool check_finite) {
  return mask_score_with(w, grad, eps, check_finite, launch);
}

}  // namespace sharpzo
