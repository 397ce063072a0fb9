// Unsigned integer keys that order floating-point scores, for radix selection and sorting.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "sharpzo/macros.h"

namespace sharpzo {

// Note [Score order]
// Larger score, larger key. -0.0 and +0.0 get the same key (they are equal scores); NaN gets key 0,
// below every number including -inf, so a NaN score is chosen last. Ties between equal keys go to
// the lower index, which makes a top-k selection a pure function of the scores.
// Branch-free, so that loops computing keys vectorize.
template <typename Bits, typename Float>
SHARPZO_HOST_DEVICE Bits order_key_of(Float x) {
  using Signed = std::make_signed_t<Bits>;
  constexpr Bits kSign = Bits{1} << (8 * sizeof(Bits) - 1);
  const Float canonical = x + Float(0);  // -0.0 + 0.0 = +0.0 (IEEE, round to nearest)
  Bits bits;
  memcpy(&bits, &canonical, sizeof(bits));  // host and device
  const Bits negative = static_cast<Bits>(static_cast<Signed>(bits) >> (8 * sizeof(Bits) - 1));
  const Bits key = bits ^ (negative | kSign);  // negative: all bits flipped; else the sign set
  return x != x ? Bits{0} : key;
}

SHARPZO_HOST_DEVICE uint32_t order_key(float x) { return order_key_of<uint32_t>(x); }
SHARPZO_HOST_DEVICE uint64_t order_key(double x) { return order_key_of<uint64_t>(x); }

// The key of |x| for a finite x: the bits of |x|, which order non-negative floats. Cheaper than
// order_key(|x|), and enough for the default score of sparse_zscore (|values|: no NaN, no sign).
SHARPZO_HOST_DEVICE uint32_t magnitude_key(float x) {
  const float magnitude = fabsf(x);
  uint32_t bits;
  memcpy(&bits, &magnitude, sizeof(bits));
  return bits;
}

SHARPZO_HOST_DEVICE uint64_t magnitude_key(double x) {
  const double magnitude = fabs(x);
  uint64_t bits;
  memcpy(&bits, &magnitude, sizeof(bits));
  return bits;
}

}  // namespace sharpzo
