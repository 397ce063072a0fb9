// The bit pattern of a float32 and back, on host and device alike.
#pragma once

#include <cstdint>
#include <cstring>

#include "sharpzo/macros.h"

namespace sharpzo {

SHARPZO_HOST_DEVICE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

SHARPZO_HOST_DEVICE float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

}  // namespace sharpzo
