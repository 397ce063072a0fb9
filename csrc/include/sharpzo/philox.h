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

// Note [Two Philox blocks per 64-bit word]
// SIMD units multiply 32 x 32 -> 64 bits only in the even 32-bit lanes (vpmuludq), so a loop of
// scalar Philox rounds vectorizes into widening, multiplying and narrowing shuffles. Packing the
// same counter word of two blocks into one uint64_t (first block in the low half) turns each
// half's product into a 64-bit multiply of a zero-extended value, which maps one-to-one onto
// vpmuludq, and the hi/lo split into shifts and masks: about half the instructions per block
// on AVX-512. Same arithmetic, same results as philox4x32 (test_philox.cpp checks both).
struct Words4x2 {
  uint64_t w0, w1, w2, w3;  // word k of the first block in bits 0..31, of the second in 32..63
};

namespace philox_detail {
constexpr uint64_t kLow = 0xFFFFFFFFull;

SHARPZO_HOST_DEVICE uint64_t both_halves(uint32_t x) { return x | (static_cast<uint64_t>(x) << 32); }

SHARPZO_HOST_DEVICE Words4x2 round_x2(Words4x2 c, uint64_t k0, uint64_t k1) {
  const uint64_t p0_first = (c.w0 & kLow) * kMul0, p0_second = (c.w0 >> 32) * kMul0;
  const uint64_t p1_first = (c.w2 & kLow) * kMul1, p1_second = (c.w2 >> 32) * kMul1;
  const uint64_t hi0 = (p0_first >> 32) | (p0_second & ~kLow);
  const uint64_t lo0 = (p0_first & kLow) | (p0_second << 32);
  const uint64_t hi1 = (p1_first >> 32) | (p1_second & ~kLow);
  const uint64_t lo1 = (p1_first & kLow) | (p1_second << 32);
  return Words4x2{hi1 ^ c.w1 ^ k0, lo1, hi0 ^ c.w3 ^ k1, lo0};
}
}  // namespace philox_detail

// philox4x32 of two counters at once, both under the key (k0, k1).
template <int Rounds = 10>
SHARPZO_HOST_DEVICE Words4x2 philox4x32_x2(Words4x2 counter, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < Rounds; ++r) {
    if (r > 0) {
      k0 += philox_detail::kBump0;
      k1 += philox_detail::kBump1;
    }
    counter = philox_detail::round_x2(counter, philox_detail::both_halves(k0),
                                      philox_detail::both_halves(k1));
  }
  return counter;
}

}  // namespace sharpzo
