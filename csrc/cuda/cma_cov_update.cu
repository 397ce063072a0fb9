// CUDA kernel of cma_cov_update_ (schema: csrc/ops.cpp, reference: sharpzo_ext/ops/reference.py).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cma_cov_update.h"

namespace sharpzo {
namespace {

constexpr int kTile = 32;

// Note [Symmetric covariance update] in cma_cov_update.h. Block (x, y) owns tile pair (I = y,
// J = x) with I <= J: each thread computes one element of the upper tile with the CPU's exact
// arithmetic, writes it, and the transposed copy goes out through shared memory (coalesced).
template <typename scalar_t>
__global__ void cov_update_kernel(scalar_t* __restrict__ C, const scalar_t* __restrict__ pc,
                                  const scalar_t* __restrict__ Y, const scalar_t* __restrict__ w,
                                  int64_t d, int64_t lambda, scalar_t c1, scalar_t cmu,
                                  scalar_t decay) {
  const int64_t I = blockIdx.y, J = blockIdx.x;
  if (I > J) return;
  __shared__ scalar_t tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = I * kTile + ty, k = J * kTile + tx;
  const bool active = j < d && k < d && k >= j;
  if (active) {
    scalar_t acc = 0;
    for (int64_t i = 0; i < lambda; ++i) {
      const scalar_t a = w[i] * Y[i * d + j];
      acc += a * Y[i * d + k];
    }
    const scalar_t value = decay * C[j * d + k] + c1 * (pc[j] * pc[k]) + cmu * acc;
    C[j * d + k] = value;
    tile[ty][tx] = value;
  }
  __syncthreads();
  // transposed write: element (J * kTile + ty, I * kTile + tx) = tile[tx][ty], for k > j
  const int64_t row = J * kTile + ty, col = I * kTile + tx;
  if (row < d && col < d && row > col) C[row * d + col] = tile[tx][ty];
}

void launch_cuda(const CovUpdateJob& job) {
  const c10::cuda::CUDAGuard guard(job.C.device());
  const int64_t d = job.C.size(0), lambda = job.Y.size(0);
  const auto tiles = static_cast<unsigned>((d + kTile - 1) / kTile);
  AT_DISPATCH_FLOATING_TYPES(job.C.scalar_type(), "cma_cov_update_cuda", [&] {
    cov_update_kernel<scalar_t><<<dim3(tiles, tiles), dim3(kTile, kTile), 0,
                                  c10::cuda::getCurrentCUDAStream()>>>(
        job.C.mutable_data_ptr<scalar_t>(), job.pc.const_data_ptr<scalar_t>(),
        job.Y.const_data_ptr<scalar_t>(), job.weights.const_data_ptr<scalar_t>(), d, lambda,
        static_cast<scalar_t>(job.c1), static_cast<scalar_t>(job.cmu),
        static_cast<scalar_t>(job.decay));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CUDA, m) {
  m.impl("cma_cov_update_", &cma_cov_update_kernel<launch_cuda>);
}

}  // namespace sharpzo
