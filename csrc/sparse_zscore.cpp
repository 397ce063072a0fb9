#include "sparse_zscore.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/isfinite.h>
#include <c10/util/Exception.h>

#include "checks.h"

namespace sharpzo {

namespace {

void check_k(const char* op, const at::Tensor& g, int64_t k) {
  TORCH_CHECK_VALUE(g.numel() > 0, op, ": g must have at least one element");
  TORCH_CHECK_VALUE(k >= 1 && k <= g.numel(), op, ": k must be in [1, ", g.numel(),
                    "] (the number of elements of g), got ", k);
}

SparseZScoreJob make_job(const char* op, const at::Tensor& g, int64_t k,
                         const std::optional<at::Tensor>& score, double eps, bool check_finite,
                         bool in_place) {
  check_floating(op, g, "g");
  check_k(op, g, k);
  check_nonnegative(op, eps, "eps");
  SparseZScoreJob job;
  job.g = g.contiguous();
  if (score.has_value()) {
    check_floating(op, *score, "score");
    check_like(op, g, "g", *score, "score");
    if (in_place) check_no_overlap(op, g, "g", *score, "score");
    job.score = score->contiguous();
  }
  job.mask = at::empty(g.sizes(), g.options().dtype(at::kBool));
  job.k = k;
  job.eps = eps;
  job.check_finite = check_finite;
  job.op = op;
  return job;
}

}  // namespace

// Note [Overflowing statistics]
// The kernels learn that data are not finite from their statistics (free: no extra pass), but
// finite data whose squares overflow float64 (|values| beyond about 1e154) give the same
// infinite std. Only on that error path is the data checked again, so that the message says
// which of the two it is.
void check_finite_data(const char* op, bool check_finite, bool finite, const char* name,
                       const at::Tensor& data) {
  if (finite || !check_finite) return;
  TORCH_CHECK_VALUE(!at::isfinite(data).all().item<bool>(), op, ": the standard deviation of ",
                    name, " overflows float64 (its values reach ", data.abs().max().item<double>(),
                    "); scale it down");
  TORCH_CHECK_VALUE(false, op, ": ", name,
                    " holds NaN or infinite values (with check_finite=False they propagate "
                    "instead: see the op's documentation)");
}

std::tuple<at::Tensor, at::Tensor> sparse_zscore_with(const at::Tensor& g, int64_t k,
                                                      const std::optional<at::Tensor>& score,
                                                      double eps, bool check_finite,
                                                      SparseZScoreLauncher launch) {
  SparseZScoreJob job = make_job("sparse_zscore", g, k, score, eps, check_finite, false);
  job.values = at::empty_like(job.g);
  launch(job);
  return {job.values, job.mask};
}

at::Tensor sparse_zscore_inplace_with(at::Tensor& g, int64_t k,
                                      const std::optional<at::Tensor>& score, double eps,
                                      bool check_finite, SparseZScoreLauncher launch) {
  SparseZScoreJob job = make_job("sparse_zscore_", g, k, score, eps, check_finite, true);
  job.values = job.g;  // Note [Non-contiguous tensors]: a copy of g if g is not contiguous
  launch(job);
  if (!g.is_same(job.values)) g.copy_(job.values);
  return job.mask;
}

at::Tensor mask_score_with(const at::Tensor& w, const at::Tensor& grad, double eps,
                           bool check_finite, MaskScoreLauncher launch) {
  constexpr const char* op = "mask_score";
  check_floating(op, w, "w");
  check_floating(op, grad, "grad");
  check_like(op, w, "w", grad, "grad");
  TORCH_CHECK_VALUE(w.numel() > 0, op, ": w must have at least one element");
  check_nonnegative(op, eps, "eps");
  const bool wide = w.scalar_type() == at::kDouble || grad.scalar_type() == at::kDouble;
  MaskScoreJob job;
  job.w = w.contiguous();
  job.grad = grad.contiguous();
  job.out = at::empty(w.sizes(), w.options().dtype(wide ? at::kDouble : at::kFloat));
  job.eps = eps;
  job.check_finite = check_finite;
  launch(job);
  return job.out;
}

}  // namespace sharpzo
