// CUDA kernel of mask_score (schema: csrc/ops.cpp, reference: sharpzo_ext/ops/reference.py).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/isfinite.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/launch.cuh"
#include "cuda/moments.cuh"
#include "sparse_zscore.h"

namespace sharpzo {
namespace {

template <typename w_t, typename grad_t, typename out_t>
__global__ void mask_score_kernel_cuda(const w_t* w, const grad_t* grad, out_t* out, int64_t n,
                                       const Moments* moments) {
  const Moments m = *moments;
  for (uint64_t i = first_index(); i < static_cast<uint64_t>(n); i += grid_stride()) {
    const double wi = static_cast<double>(w[i]);
    out[i] = m.finite ? static_cast<out_t>(wi * wi * zscore(fabs(static_cast<double>(grad[i])), m))
                      : static_cast<out_t>(NAN);
  }
}

template <typename w_t, typename grad_t, typename out_t>
void mask_score_typed(const MaskScoreJob& job) {
  const int64_t n = job.w.numel();
  const grad_t* grad = job.grad.const_data_ptr<grad_t>();
  const at::Tensor moments = moments_cuda(AbsAsDouble<grad_t>{grad}, n, job.eps, job.grad);
  if (job.check_finite) {
    check_finite_data("mask_score", true, moments_finite(moments), "grad",
                      job.grad);
    check_finite_data("mask_score", true, at::isfinite(job.w).all().item<bool>(), "w",
                      job.w);
  }
  mask_score_kernel_cuda<<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      job.w.const_data_ptr<w_t>(), grad, job.out.mutable_data_ptr<out_t>(), n,
      reinterpret_cast<const Moments*>(moments.const_data_ptr<uint8_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_cuda(const MaskScoreJob& job) {
  const c10::cuda::CUDAGuard guard(job.w.device());
  dispatch_mask_score(job, [&]<typename w_t, typename grad_t, typename out_t>() {
    mask_score_typed<w_t, grad_t, out_t>(job);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CUDA, m) {
  m.impl("mask_score", &mask_score_kernel<launch_cuda>);
}

}  // namespace sharpzo
