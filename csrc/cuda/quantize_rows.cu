// CUDA kernel of quantize_rows (schema: csrc/ops.cpp, reference: sharpzo_ext/ops/reference.py).
#include <ATen/core/Tensor.h>
#include <algorithm>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/launch.cuh"
#include "quantize_rows.h"
#include "sharpzo/quantize.h"

namespace sharpzo {
namespace {

constexpr int64_t kMaxGridRows = 1 << 30;  // rows per launch (gridDim.x < 2^31)

// One block per row: the max of the bit patterns of |x| by a shared-memory atomicMax, then the
// quantized values (Note [quantize_rows arithmetic]).
__global__ void quantize_rows_kernel_cuda(const float* x, uint8_t* q, float* scale, int64_t cols,
                                          float qmax) {
  __shared__ uint32_t max_bits;
  const int64_t row = blockIdx.x;
  const float* xr = x + row * cols;
  uint8_t* qr = q + row * cols;
  if (threadIdx.x == 0) max_bits = 0;
  __syncthreads();
  uint32_t mine = 0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) mine = max(mine, abs_bits(xr[i]));
  atomicMax(&max_bits, mine);
  __syncthreads();
  const float s = row_scale(max_bits, qmax);
  if (threadIdx.x == 0) scale[row] = s;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) qr[i] = quantize_value(xr[i], s, qmax);
}

void launch_cuda(const QuantizeRowsJob& job) {
  const c10::cuda::CUDAGuard guard(job.x.device());
  const int64_t rows = job.x.size(0);
  for (int64_t start = 0; start < rows; start += kMaxGridRows) {
    const int64_t count = std::min<int64_t>(kMaxGridRows, rows - start);
    const int64_t cols = job.x.size(1);
    quantize_rows_kernel_cuda<<<static_cast<unsigned>(count), kThreads, 0,
                                c10::cuda::getCurrentCUDAStream()>>>(
        job.x.const_data_ptr<float>() + start * cols,
        job.q.mutable_data_ptr<uint8_t>() + start * cols, job.scale.mutable_data_ptr<float>() + start,
        cols, job.qmax);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CUDA, m) {
  m.impl("quantize_rows", &quantize_rows_kernel<launch_cuda>);
}

}  // namespace sharpzo
