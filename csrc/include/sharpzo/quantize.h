// Row-wise symmetric int8 quantization (op quantize_rows), shared by the CPU and CUDA kernels.
// Torch-free: tested by csrc/tests/test_quantize.cpp.
//
// Note [quantize_rows arithmetic]
// A row's scale is s = max|x| / qmax in float32, qmax in [1, 127] (1 for a row of zeros, or of
// values so small that s would be 0; NaN for a row with a non-finite entry). Each entry becomes
// q = round_half_even(x / s) + 128 as a uint8 (the u8 form of the int8 value in [-qmax, qmax]
// that oneDNN's u8 x s8 matmul takes with zero point 128; a non-finite row is all 128). qmax is
// 127 for full int8; 63 gives the 7-bit weights of Note [int8 without VNNI]
// (sharpzo_ext/clip/engine/precision.py). The maximum is taken over the bit patterns of |x|, which
// order like the values for non-negative floats and put inf and NaN above every finite value:
// an integer max that vectorizes and finds non-finite rows on the way. Rounding adds and subtracts
// 1.5 * 2^23, exact round-half-even for |y| < 2^22 in float32 without FMA contraction; the
// division is IEEE. So every device computes the same bits.
#pragma once

#include <cstdint>

#include "sharpzo/bits.h"
#include "sharpzo/macros.h"

namespace sharpzo {

constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr uint32_t kInfBits = 0x7f800000u;

// The bit pattern of |x|: max over a row gives max|x| (>= kInfBits: a non-finite entry).
SHARPZO_HOST_DEVICE uint32_t abs_bits(float x) { return float_bits(x) & kAbsMask; }

// The row's scale from the max of abs_bits over the row, for values in [-qmax, qmax].
SHARPZO_HOST_DEVICE float row_scale(uint32_t max_abs_bits, float qmax) {
  if (max_abs_bits >= kInfBits) return bits_float(0x7fc00000u);  // quiet NaN
  const float s = bits_float(max_abs_bits) / qmax;
  return s == 0.0f ? 1.0f : s;  // zeros, or below qmax times the smallest subnormal
}

// q = round_half_even(x / scale) + 128, in [128 - qmax, 128 + qmax]; 128 where the scale is NaN.
SHARPZO_HOST_DEVICE uint8_t quantize_value(float x, float scale, float qmax) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  float y = x / scale;
  y = y < -qmax ? -qmax : (y > qmax ? qmax : y);
  y = scale == scale ? y : 0.0f;  // a NaN scale (or y) gives 0: q = 128
  y = (y + kRound) - kRound;
  return static_cast<uint8_t>(static_cast<int32_t>(y) + 128);
}

}  // namespace sharpzo
