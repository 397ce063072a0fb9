#include "cma_cov_update.h"

#include "checks.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace sharpzo {

namespace {

void check_companion(const at::Tensor& C, const at::Tensor& t, const char* name,
                     c10::IntArrayRef shape) {
  constexpr const char* op = "cma_cov_update_";
  TORCH_CHECK_VALUE(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == C.scalar_type(), op, ": ", name, " must have C's dtype ",
                   C.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == C.device(), op, ": ", name, " must be on C's device ",
                    C.device(), ", got ", t.device());
}

void check_coefficient(double value, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(value), "cma_cov_update_: ", name, " must be finite, got ",
                    value);
}

}  // namespace

void cma_cov_update_with(at::Tensor& C, const at::Tensor& pc, const at::Tensor& Y,
                         const at::Tensor& weights, double c1, double cmu, double decay,
                         CovUpdateLauncher launch) {
  constexpr const char* op = "cma_cov_update_";
  TORCH_CHECK_TYPE(C.scalar_type() == at::kFloat || C.scalar_type() == at::kDouble, op,
                   ": C must be a float32 or float64 tensor, got ", C.scalar_type());
  TORCH_CHECK_VALUE(C.dim() == 2 && C.size(0) == C.size(1) && C.size(0) > 0, op,
                    ": C must be a non-empty square matrix, got shape ", C.sizes());
  const int64_t d = C.size(0);
  check_companion(C, pc, "pc", {d});
  TORCH_CHECK_VALUE(Y.dim() == 2 && Y.size(1) == d, op, ": Y must have shape (lambda, ", d,
                    "), got ", Y.sizes());
  check_companion(C, Y, "Y", {Y.size(0), d});
  check_companion(C, weights, "weights", {Y.size(0)});
  check_no_overlap(op, C, "C", pc, "pc");
  check_no_overlap(op, C, "C", Y, "Y");
  check_no_overlap(op, C, "C", weights, "weights");
  check_coefficient(c1, "c1");
  check_coefficient(cmu, "cmu");
  check_coefficient(decay, "decay");
  CovUpdateJob job{C.contiguous(), pc.contiguous(), Y.contiguous(), weights.contiguous(), c1, cmu,
                   decay};
  launch(job);
  if (!C.is_same(job.C)) C.copy_(job.C);  // Note [Non-contiguous tensors]
}

}  // namespace sharpzo
