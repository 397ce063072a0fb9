#include "checks.h"

#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace sharpzo {

void check_floating(const char* op, const at::Tensor& x, const char* name) {
  const auto dtype = x.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                       dtype == at::kBFloat16,
                   op, ": ", name, " must be a float16, bfloat16, float32 or float64 tensor, got ",
                   dtype);
}

void check_like(const char* op, const at::Tensor& x, const char* x_name, const at::Tensor& other,
                const char* other_name) {
  TORCH_CHECK_VALUE(other.sizes() == x.sizes(), op, ": ", other_name, " must have the shape of ",
                    x_name, " ", x.sizes(), ", got ", other.sizes());
  TORCH_CHECK_VALUE(other.device() == x.device(), op, ": ", other_name, " must be on ", x_name,
                    "'s device ", x.device(), ", got ", other.device());
}

void check_no_overlap(const char* op, const at::Tensor& written, const char* written_name,
                      const at::Tensor& other, const char* other_name) {
  const auto status = at::get_overlap_status(written, other);
  TORCH_CHECK_VALUE(status != at::MemOverlapStatus::Full && status != at::MemOverlapStatus::Partial,
                    op, ": ", other_name, " must not share memory with ", written_name,
                    ", which the op writes");
}

void check_nonnegative(const char* op, double value, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(value) && value >= 0, op, ": ", name,
                    " must be finite and >= 0, got ", value);
}

}  // namespace sharpzo
