// Mean and standard deviation on the CPU in the order of Note [Deterministic reductions]:
// threads compute whole chunks, the chunk sums are added in chunk order.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "sharpzo/macros.h"
#include "sharpzo/moments.h"

namespace sharpzo {

namespace moments_detail {

// Sums of chunks [chunk_begin, chunk_end) of value(0 .. n-1).
template <typename Value>
SHARPZO_CPU_CLONES void chunk_sums(Value value, int64_t n, int64_t chunk_begin, int64_t chunk_end,
                                   double* out) {
  for (int64_t c = chunk_begin; c < chunk_end; ++c) {
    out[c] = chunk_sum(value, c * kChunkElements, std::min(n, (c + 1) * kChunkElements));
  }
}

template <typename Value>
double ordered_sum(Value value, int64_t n) {
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  std::vector<double> sums(static_cast<size_t>(chunks));
  at::parallel_for(0, chunks, 4, [&](int64_t begin, int64_t end) {
    chunk_sums(value, n, begin, end, sums.data());
  });
  double total = 0;
  for (const double s : sums) total += s;
  return total;
}

}  // namespace moments_detail

// Moments of value(0 .. n-1) (value(i) -> double), two passes: sum, then squared deviations.
template <typename Value>
Moments moments_cpu(Value value, int64_t n, double eps) {
  const double sum = moments_detail::ordered_sum(value, n);
  const double mean = sum / static_cast<double>(n);
  const double squared_deviations = moments_detail::ordered_sum(
      [&](int64_t i) {
        const double d = value(i) - mean;
        return d * d;
      },
      n);
  return make_moments(sum, squared_deviations, n, eps);
}

// Whether value(0 .. n-1) are all finite (a vectorized parallel reduction).
template <typename Value>
bool all_finite_cpu(Value value, int64_t n) {
  return at::parallel_reduce(
      0, n, 1 << 15, true,
      [&](int64_t begin, int64_t end, bool finite) {
        bool chunk_finite = true;
        for (int64_t i = begin; i < end; ++i) chunk_finite &= is_finite(value(i));
        return finite && chunk_finite;
      },
      [](bool a, bool b) { return a && b; });
}

}  // namespace sharpzo
