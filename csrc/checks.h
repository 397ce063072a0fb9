// Argument checks shared by the host code of every op. Errors name the op and the argument,
// and use the Python exception a user expects: TypeError for dtypes, ValueError for values.
#pragma once

#include <ATen/core/Tensor.h>

namespace sharpzo {

// `x` (called `name`) is a float16, bfloat16, float32 or float64 tensor.
void check_floating(const char* op, const at::Tensor& x, const char* name);

// `other` has the shape and the device of `x`.
void check_like(const char* op, const at::Tensor& x, const char* x_name, const at::Tensor& other,
                const char* other_name);

// `other` shares no memory with `written`, which the op writes while it reads `other` (as
// torch.addr_ refuses: the result would depend on the order of the loops).
void check_no_overlap(const char* op, const at::Tensor& written, const char* written_name,
                      const at::Tensor& other, const char* other_name);

// `value` is finite and >= 0.
void check_nonnegative(const char* op, double value, const char* name);

}  // namespace sharpzo
