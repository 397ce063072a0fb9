// Host-side code shared by the CPU and CUDA kernels of quantize_rows: argument checks, outputs,
// the job handed to a launcher.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace sharpzo {

// q = round_half_even(x / s) + 128 (uint8) with s = max|x| / qmax per row of a 2-D float32 x
// (Note [quantize_rows arithmetic] in sharpzo/quantize.h).
struct QuantizeRowsJob {
  at::Tensor x;      // (rows, cols) float32, contiguous
  at::Tensor q;      // (rows, cols) uint8
  at::Tensor scale;  // (rows, 1) float32
  float qmax;        // an integer in [1, 127]
};

using QuantizeRowsLauncher = void (*)(const QuantizeRowsJob& job);

std::tuple<at::Tensor, at::Tensor> quantize_rows_with(const at::Tensor& x, int64_t qmax,
                                                      QuantizeRowsLauncher launch);

template <QuantizeRowsLauncher launch>
std::tuple<at::Tensor, at::Tensor> quantize_rows_kernel(const at::Tensor& x, int64_t qmax) {
  return quantize_rows_with(x, qmax, launch);
}

}  // namespace sharpzo
