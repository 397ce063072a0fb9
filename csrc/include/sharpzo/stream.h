// The perturbation stream (specified in docs/stream.md): element j of stream `stream` under `seed`
// is a pure function of (seed, stream, j), computed from one Philox4x32-10 block.
//
//   key     = (seed mod 2^32, seed >> 32)
//   counter = (block mod 2^32, block >> 32, stream mod 2^32, stream >> 32)
//   Rademacher: block j / 128, word (j / 32) % 4, bit j % 32; +1 if set, else -1.
//   Gaussian:   block j / 4, lane j % 4; Box-Muller on (u0, u1) gives lanes 0 (cos), 1 (sin),
//               on (u2, u3) lanes 2 (cos), 3 (sin); u = ((w >> 9) + 0.5) * 2^-23.
//
// Everything here is branch-free scalar code that the host compiler vectorizes across a loop
// over blocks and that CUDA runs per thread, so both devices compute with the same formulas.
#pragma once

#include <cstdint>
#include <cmath>

#include "sharpzo/bits.h"
#include "sharpzo/macros.h"
#include "sharpzo/philox.h"

namespace sharpzo {

enum class Distribution : int { kGaussian = 0, kRademacher = 1 };

constexpr int64_t kRademacherPerBlock = 128;
constexpr int64_t kGaussianPerBlock = 4;

struct StreamKey {
  uint32_t seed_lo, seed_hi, stream_lo, stream_hi;
};

SHARPZO_HOST_DEVICE StreamKey make_stream_key(uint64_t seed, uint64_t stream) {
  return StreamKey{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                   static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
}

// The block with counter words (block_lo, block_hi, stream_lo, stream_hi).
SHARPZO_HOST_DEVICE Words4 stream_block(StreamKey key, uint32_t block_lo, uint32_t block_hi) {
  return philox4x32<10>(Words4{block_lo, block_hi, key.stream_lo, key.stream_hi}, key.seed_lo,
                        key.seed_hi);
}

SHARPZO_HOST_DEVICE Words4 stream_block(StreamKey key, uint64_t block) {
  return stream_block(key, static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32));
}

// Blocks `block_lo` (even) and `block_lo + 1` of the counter's high word `block_hi`, packed as in
// Note [Two Philox blocks per 64-bit word].
SHARPZO_HOST_DEVICE Words4x2 stream_block_pair(StreamKey key, uint32_t block_lo, uint32_t block_hi) {
  const Words4x2 counter{block_lo | (static_cast<uint64_t>(block_lo + 1) << 32),
                         philox_detail::both_halves(block_hi),
                         philox_detail::both_halves(key.stream_lo),
                         philox_detail::both_halves(key.stream_hi)};
  return philox4x32_x2<10>(counter, key.seed_lo, key.seed_hi);
}

// ---- Rademacher -------------------------------------------------------------------------

// +1 if bit `bit` (0..31) of `word` is set, else -1.
SHARPZO_HOST_DEVICE float rademacher_from_bit(uint32_t word, uint32_t bit) {
  return static_cast<float>(static_cast<int32_t>((word >> bit) & 1u) * 2 - 1);
}

// Element `index` (0..127) of a Rademacher block.
SHARPZO_HOST_DEVICE float rademacher_from_block(Words4 w, uint32_t index) {
  const uint32_t lane = index >> 5;
  const uint32_t word = lane == 0 ? w.w0 : lane == 1 ? w.w1 : lane == 2 ? w.w2 : w.w3;
  return rademacher_from_bit(word, index & 31u);
}

// ---- Gaussian ---------------------------------------------------------------------------

namespace stream_detail {

// 2 * ((w >> 9) + 0.5) = 2 * (w >> 9) + 1 = (w >> 8) | 1: an odd integer below 2^24, exact in
// float32.
SHARPZO_HOST_DEVICE int32_t twice_uniform_numerator(uint32_t w) {
  return static_cast<int32_t>((w >> 8) | 1u);
}

// Note [Polynomial log and sincos]
// The Gaussian transform needs log, sqrt, cos and sin. libm's versions do not vectorize and
// differ between host and device, so both are computed here from polynomials whose
// coefficients were fitted (near-minimax, float64) for this use:
//   ln(1 + f) = f - f^2/2 + f^3 P(f) for f in [sqrt(1/2) - 1, sqrt(2) - 1]   (|P err| < 1.4e-7)
//   sin(2 pi t) = t S(t^2), cos(2 pi t) = C(t^2) for t in [-1/8, 1/8]      (err < 5e-11)
// The arguments are reduced exactly: u = K 2^-24 with K an odd 24-bit integer, so the
// exponent split of log and the quadrant split of the angle (integer arithmetic on K) lose
// nothing, and ln u near u = 1 keeps its relative precision. The float32 results are within
// about 1e-6 * (1 + |z|) of a float64 evaluation, well inside the contract's 1e-5 * (1 + |z|).

// ln(u) for u = K 2^-24, K odd in [1, 2^24).
SHARPZO_HOST_DEVICE float log_of_unit(int32_t K) {
  // u = m 2^e with m in [sqrt(1/2), sqrt(2)): offsetting the bits by those of sqrt(1/2) makes
  // the exponent field e and the mantissa field m - sqrt(1/2), with no comparison (or branch).
  // The bits of u = K 2^-24 are those of float(K) (exact) with 24 taken off the exponent field.
  constexpr int32_t kSqrtHalfBits = 0x3F3504F3;
  constexpr int32_t kTimesTwoToMinus24 = 24 << 23;
  const int32_t offset_bits = static_cast<int32_t>(float_bits(static_cast<float>(K))) -
                              (kTimesTwoToMinus24 + kSqrtHalfBits);
  const int32_t e = offset_bits >> 23;  // arithmetic shift: u < sqrt(1/2) gives e < 0
  const float m = bits_float(static_cast<uint32_t>((offset_bits & 0x007FFFFF) + kSqrtHalfBits));
  const float f = m - 1.0f;  // exact (Sterbenz)
  float p = -0.08305481240651691f;
  p = p * f + 0.12798938142118557f;
  p = p * f - 0.1294340424942531f;
  p = p * f + 0.1419023220798965f;
  p = p * f - 0.16643489045773976f;
  p = p * f + 0.20001880056721505f;
  p = p * f - 0.25000280850656326f;
  p = p * f + 0.333333265395701f;
  const float f2 = f * f;
  const float log_m = f - 0.5f * f2 + f2 * f * p;
  return static_cast<float>(e) * 0.693147180559945309f + log_m;
}

struct SinCos {
  float sin, cos;
};

// sin and cos of 2 pi u for u = K 2^-24, K odd in [1, 2^24).
SHARPZO_HOST_DEVICE SinCos sincos_2pi_of_unit(int32_t K) {
  const int32_t q = (K + (1 << 21)) >> 22;        // nearest quarter turn, 0..4
  const float t = static_cast<float>(K - (q << 22)) * 0x1p-24f;  // in [-1/8, 1/8], exact
  const float t2 = t * t;
  float s = 41.472948218467465f;
  s = s * t2 - 76.6978699453357f;
  s = s * t2 + 81.6052047461773f;
  s = s * t2 - 41.34170215350475f;
  s = s * t2 + 6.283185307152451f;
  s = s * t;
  float c = 59.22040727372772f;
  c = c * t2 - 85.44285212094698f;
  c = c * t2 + 64.93931620844884f;
  c = c * t2 - 19.73920865035794f;
  c = c * t2 + 0.9999999999526f;
  // Rotate by q quarter turns, (sin, cos) -> (cos, -sin) per turn, with bit operations only
  // (selects on AVX2 would stop the loop from vectorizing).
  const uint32_t odd = 0u - static_cast<uint32_t>(q & 1);           // all ones if q odd
  const uint32_t neg_sin = static_cast<uint32_t>(q & 2) << 30;       // q = 2, 3
  const uint32_t neg_cos = static_cast<uint32_t>((q + 1) & 2) << 30;  // q = 1, 2
  const uint32_t s_bits = float_bits(s), c_bits = float_bits(c);
  return SinCos{bits_float(((c_bits & odd) | (s_bits & ~odd)) ^ neg_sin),
                bits_float(((s_bits & odd) | (c_bits & ~odd)) ^ neg_cos)};
}

}  // namespace stream_detail

// The contract's uniform: ((w >> 9) + 0.5) * 2^-23, in (0, 1), exact in float32.
SHARPZO_HOST_DEVICE float uniform_from_word(uint32_t w) {
  return static_cast<float>(stream_detail::twice_uniform_numerator(w)) * 0x1p-24f;
}

// Box-Muller on the uniforms of words (wa, wb): {sqrt(-2 ln ua) cos(2 pi ub), ... sin(...)}.
struct GaussianPair {
  float z_cos, z_sin;
};

SHARPZO_HOST_DEVICE GaussianPair box_muller(uint32_t wa, uint32_t wb) {
  const float log_u = stream_detail::log_of_unit(stream_detail::twice_uniform_numerator(wa));
  const float radius = sqrtf(-2.0f * log_u);
  const stream_detail::SinCos sc =
      stream_detail::sincos_2pi_of_unit(stream_detail::twice_uniform_numerator(wb));
  return GaussianPair{radius * sc.cos, radius * sc.sin};
}

// ---- Four consecutive elements -----------------------------------------------------------

// Elements 4 quad .. 4 quad + 3 of the stream: one Philox block either way (used where each
// thread owns a few elements, as in the CUDA kernel; the CPU kernels work on whole blocks).
struct Values4 {
  float v[4];
};

SHARPZO_HOST_DEVICE Values4 stream_quad(StreamKey key, Distribution dist, uint64_t quad) {
  if (dist == Distribution::kGaussian) {
    const Words4 w = stream_block(key, quad);
    const GaussianPair a = box_muller(w.w0, w.w1);
    const GaussianPair b = box_muller(w.w2, w.w3);
    return Values4{{a.z_cos, a.z_sin, b.z_cos, b.z_sin}};
  }
  const Words4 w = stream_block(key, quad / 32);
  const uint32_t first = static_cast<uint32_t>(quad % 32) * 4;  // index within the block
  Values4 out;
  for (uint32_t lane = 0; lane < 4; ++lane) out.v[lane] = rademacher_from_block(w, first + lane);
  return out;
}

}  // namespace sharpzo
