// Host-side code shared by the CPU and CUDA kernels of cma_cov_update_.
#pragma once

#include <ATen/core/Tensor.h>

namespace sharpzo {

// In place: C = decay * C + c1 * pc pc^T + cmu * sum_i weights[i] * Y[i] Y[i]^T.
// Note [Symmetric covariance update]: element (j, k) is computed once, for j <= k, from the upper
// triangle of C, and written to (j, k) and (k, j): the result is exactly symmetric, and C is read
// and written in one pass. Per element: acc = sum over i, in order, of (weights[i] * Y[i, j]) *
// Y[i, k]; C_jk = decay * C_jk + c1 * (pc_j * pc_k) + cmu * acc, in C's dtype, uncontracted.
struct CovUpdateJob {
  at::Tensor C;        // (d, d) contiguous
  at::Tensor pc;       // (d,) contiguous
  at::Tensor Y;        // (lambda, d) contiguous
  at::Tensor weights;  // (lambda,) contiguous
  double c1 = 0, cmu = 0, decay = 1;
};

using CovUpdateLauncher = void (*)(const CovUpdateJob& job);

void cma_cov_update_with(at::Tensor& C, const at::Tensor& pc, const at::Tensor& Y,
                         const at::Tensor& weights, double c1, double cmu, double decay,
                         CovUpdateLauncher launch);

template <CovUpdateLauncher launch>
void cma_cov_update_kernel(at::Tensor& C, const at::Tensor& pc, const at::Tensor& Y,
                           const at::Tensor& weights, double c1, double cmu, double decay) {
  cma_cov_update_with(C, pc, Y, weights, c1, cmu, decay, launch);
}

}  // namespace sharpzo
