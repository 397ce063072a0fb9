// CPU kernel of quantize_rows (schema: csrc/ops.cpp, reference: sharpzo_ext/ops/reference.py).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "quantize_rows.h"
#include "sharpzo/quantize.h"

namespace sharpzo {
namespace {

// One row: an integer max over the bit patterns of |x|, then the quantized values; both loops
// vectorize (Note [quantize_rows arithmetic]).
SHARPZO_CPU_CLONES void quantize_row(const float* __restrict x, uint8_t* __restrict q,
                                     float* scale, int64_t cols, float qmax) {
  uint32_t max_bits = 0;
  for (int64_t i = 0; i < cols; ++i) {
    const uint32_t bits = abs_bits(x[i]);
    max_bits = bits > max_bits ? bits : max_bits;
  }
  const float s = row_scale(max_bits, qmax);
  *scale = s;
  for (int64_t i = 0; i < cols; ++i) q[i] = quantize_value(x[i], s, qmax);
}

void launch_cpu(const QuantizeRowsJob& job) {
  const int64_t rows = job.x.size(0), cols = job.x.size(1);
  const float* x = job.x.const_data_ptr<float>();
  uint8_t* q = job.q.mutable_data_ptr<uint8_t>();
  float* scale = job.scale.mutable_data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      quantize_row(x + r * cols, q + r * cols, scale + r, cols, job.qmax);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CPU, m) {
  m.impl("quantize_rows", &quantize_rows_kernel<launch_cpu>);
}

}  // namespace sharpzo
