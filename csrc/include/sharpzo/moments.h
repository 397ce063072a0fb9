// Mean and population standard deviation with a defined summation order, shared by host and
// device code (sparse_zscore, mask_score).
//
// Note [Deterministic reductions]
// A sum over a tensor is defined, not left to the implementation: the tensor is cut into chunks
// of kChunkElements; within a chunk, element p goes to accumulator p % kLanes, which adds in
// index order; a chunk's sum combines its accumulators as ((a0 + a1) + (a2 + a3)) + ((a4 + a5) +
// (a6 + a7)); the total adds the chunk sums in chunk order. Everything is float64 without FMA
// contraction (Note [Same bits everywhere]). Threads and CUDA threads take whole chunks, so the
// result is the same for every thread count, launch geometry and device, and reference.py
// reproduces it bit for bit; a selection that depends on these statistics (the top-k of z-scores)
// is then the same everywhere too. kLanes = 8: one AVX-512 register of float64, so the CPU loop
// vectorizes exactly as written.
#pragma once

#include <cstdint>

#include "sharpzo/macros.h"

namespace sharpzo {

constexpr int64_t kChunkElements = 4096;
constexpr int kLanes = 8;

// The sum of value(i) for i in [begin, end), end - begin <= kChunkElements, in the order above.
template <typename Value>
SHARPZO_HOST_DEVICE double chunk_sum(Value value, int64_t begin, int64_t end) {
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    for (int lane = 0; lane < kLanes; ++lane) acc[lane] += value(i + lane);
  }
  for (int lane = 0; i + lane < end; ++lane) acc[lane] += value(i + lane);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// What a z-score needs: values are (x - mean) / denom with denom = std + eps. `finite` is false
// when the data hold a NaN or an infinity (the statistics are then NaN or infinite).
struct Moments {
  double mean;
  double denom;
  bool finite;
};

SHARPZO_HOST_DEVICE bool is_finite(double x) { return x - x == 0.0; }  // false for NaN and inf

SHARPZO_HOST_DEVICE Moments make_moments(double sum, double squared_deviations, int64_t n,
                                         double eps) {
  const double mean = sum / static_cast<double>(n);
  const double std = sqrt(squared_deviations / static_cast<double>(n));
  return Moments{mean, std + eps, is_finite(mean) && is_finite(std)};
}

// The z-score of x; 0 when the data are constant and eps is 0 (never 0 / 0).
SHARPZO_HOST_DEVICE double zscore(double x, Moments m) {
  return m.denom > 0 ? (x - m.mean) / m.denom : 0.0;
}

}  // namespace sharpzo
