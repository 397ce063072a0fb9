// The type the kernels compute in for an element type: float for float16, bfloat16 and float
// (low-precision values are computed in float32 and rounded once on store), double for double.
// Host and device code alike; no torch types needed (c10::Half and c10::BFloat16 map to float).
#pragma once

#include <type_traits>

namespace sharpzo {

template <typename T>
using acc_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

}  // namespace sharpzo
