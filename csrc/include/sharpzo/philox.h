// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
// written once for host and device code. Known-answer vectors: csrc/tests/test_philox.cpp.
#pragma once

#include <cstdint>

#include "sharpzo/macros.h"

namespace sharpzo {

struct Words4 {
  uint32_t w0, w1, w2, w3;
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;  // multiplies counter word 0
constexpr uint32_t kMul1 = 0xCD9E8D57u;  // multiplies counter word 2
constexpr uint32_t kBump0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kBump1 = 0xBB67AE85u;  // sqrt(3) - 1

SHARPZO_HOST_DEVICE Words4 round(Words4 c, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kMul0) * c.w0;
  const uint64_t p1 = static_cast<uint64_t>(kMul1) * c.w2;
  return Words4{static_cast<uint32_t>(p1 >> 32) ^ c.w1 ^ k0, static_cast<uint32_t>(p1),
                static_cast<uint32_t>(p0 >> 32) ^ c.w3 ^ k1, static_cast<uint32_t>(p0)};
}
}  // namespace philox_detail

// Philox4x32 with `Rounds` rounds: counter (c0, c1, c2, c3), key (k0, k1).
template <int Rounds = 10>
SHARPZO_HOST_DEVICE Words4 philox4x32(Words4 counter, uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < Rounds; ++r) {
    if (r > 0) {
      k0 += philox_detail::kBump0;
      k1 += philox_detail::kBump1;
    }
    counter = philox_detail::round(counter, k0, k1);
  }
  return counter;
}

}  // namespace sharpzo
