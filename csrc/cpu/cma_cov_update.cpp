// CPU kernel of cma_cov_update_ (schema: csrc/ops.cpp, reference: sharpzo_ext/ops/reference.py).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "cma_cov_update.h"
#include "sharpzo/macros.h"

namespace sharpzo {
namespace {

// Note [Symmetric covariance update] in cma_cov_update.h. The upper triangle is cut into tile
// pairs (I <= J) of kTile x kTile, one parallel task each. Within a tile, kRows rows of
// accumulators (kRows x kTile values, in registers) are updated while the population streams
// through, so each loaded row segment of Y serves kRows rows: a register-blocked rank-lambda
// update. Full tiles run with compile-time sizes; edge tiles with the same arithmetic in loops of
// run-time length.
constexpr int64_t kTile = 32;
constexpr int64_t kRows = 4;

template <int64_t kCols, typename scalar_t>
inline void accumulate_rows(const scalar_t* __restrict Y, const scalar_t* __restrict w, int64_t d,
                            int64_t lambda, int64_t j0, int64_t rows, int64_t col0, int64_t cols,
                            scalar_t (&acc)[kRows][kTile]) {
  const int64_t width = kCols > 0 ? kCols : cols;
  for (int64_t i = 0; i < lambda; ++i) {
    const scalar_t* y = Y + i * d;
    scalar_t a[kRows];
    for (int64_t r = 0; r < kRows; ++r) a[r] = w[i] * y[j0 + (r < rows ? r : 0)];
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t c = 0; c < width; ++c) acc[r][c] += a[r] * y[col0 + c];
    }
  }
}

template <typename scalar_t>
SHARPZO_CPU_CLONES void update_tile(scalar_t* __restrict C, const scalar_t* __restrict pc,
                                    const scalar_t* __restrict Y, const scalar_t* __restrict w,
                                    int64_t d, int64_t lambda, int64_t row0, int64_t col0,
                                    scalar_t c1, scalar_t cmu, scalar_t decay) {
  const int64_t tile_rows = std::min(kTile, d - row0), cols = std::min(kTile, d - col0);
  for (int64_t r0 = 0; r0 < tile_rows; r0 += kRows) {
    const int64_t rows = std::min(kRows, tile_rows - r0);
    scalar_t acc[kRows][kTile] = {};
    if (cols == kTile) {
      accumulate_rows<kTile>(Y, w, d, lambda, row0 + r0, rows, col0, cols, acc);
    } else {
      accumulate_rows<0>(Y, w, d, lambda, row0 + r0, rows, col0, cols, acc);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t j = row0 + r0 + r;
      for (int64_t c = row0 == col0 ? r0 + r : 0; c < cols; ++c) {  // diagonal tile: k >= j
        const int64_t k = col0 + c;
        const scalar_t value = decay * C[j * d + k] + c1 * (pc[j] * pc[k]) + cmu * acc[r][c];
        C[j * d + k] = value;
        C[k * d + j] = value;
      }
    }
  }
}

void launch_cpu(const CovUpdateJob& job) {
  const int64_t d = job.C.size(0), lambda = job.Y.size(0);
  const int64_t tiles = (d + kTile - 1) / kTile;
  const int64_t pairs = tiles * (tiles + 1) / 2;
  AT_DISPATCH_FLOATING_TYPES(job.C.scalar_type(), "cma_cov_update_cpu", [&] {
    scalar_t* C = job.C.mutable_data_ptr<scalar_t>();
    const scalar_t* pc = job.pc.const_data_ptr<scalar_t>();
    const scalar_t* Y = job.Y.const_data_ptr<scalar_t>();
    const scalar_t* w = job.weights.const_data_ptr<scalar_t>();
    const auto c1 = static_cast<scalar_t>(job.c1), cmu = static_cast<scalar_t>(job.cmu);
    const auto decay = static_cast<scalar_t>(job.decay);
    at::parallel_for(0, pairs, 1, [&](int64_t begin, int64_t end) {
      // pair p -> (I, J), I <= J, row by row of the upper triangle of tiles
      int64_t I = 0, p = begin, row_pairs = tiles;
      while (p >= row_pairs) p -= row_pairs--, ++I;
      int64_t J = I + p;
      for (int64_t q = begin; q < end; ++q) {
        update_tile(C, pc, Y, w, d, lambda, I * kTile, J * kTile, c1, cmu, decay);
        if (++J == tiles) J = ++I;
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CPU, m) {
  m.impl("cma_cov_update_", &cma_cov_update_kernel<launch_cpu>);
}

}  // namespace sharpzo
