// CUDA kernels of sparse_zscore and sparse_zscore_ (schemas: csrc/ops.cpp, reference:
// sharpzo_ext/ops/reference.py).
//
// Note [Selection on CUDA]
// The CPU selects with a radix select; here the keys (the same keys, sharpzo/order_key.h) are
// sorted with torch's stable descending sort (CUB's radix sort), whose stability keeps equal keys
// in index order, and the first k indices form the mask. The result equals the CPU's bit for bit;
// nothing waits on the host except the optional finiteness check.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <type_traits>

#include "cuda/launch.cuh"
#include "cuda/moments.cuh"
#include "sharpzo/acc_type.h"
#include "sharpzo/order_key.h"
#include "sparse_zscore.h"

namespace sharpzo {
namespace {

// Keys as int64 in the same order as the unsigned keys (torch sorts signed integers).
__device__ __forceinline__ int64_t signed_key(uint32_t key) { return static_cast<int64_t>(key); }
__device__ __forceinline__ int64_t signed_key(uint64_t key) {
  return static_cast<int64_t>(key ^ (uint64_t{1} << 63));
}

// values[i] = z-score of g[i] (NaN if the moments are not finite) and its default key |values[i]|.
template <typename value_t>
__global__ void zscore_kernel(const value_t* g, value_t* values, int64_t* keys, int64_t n,
                              const Moments* moments) {
  const Moments m = *moments;
  for (uint64_t i = first_index(); i < static_cast<uint64_t>(n); i += grid_stride()) {
    const value_t v = m.finite ? static_cast<value_t>(zscore(static_cast<double>(g[i]), m))
                               : static_cast<value_t>(NAN);
    values[i] = v;
    if (keys != nullptr) keys[i] = signed_key(magnitude_key(static_cast<acc_type<value_t>>(v)));
  }
}

template <typename score_t>
__global__ void score_key_kernel(const score_t* score, int64_t* keys, int64_t n) {
  for (uint64_t i = first_index(); i < static_cast<uint64_t>(n); i += grid_stride()) {
    keys[i] = signed_key(order_key(static_cast<acc_type<score_t>>(score[i])));
  }
}

// Zeroes values outside the mask; with non-finite moments the mask is cleared (values stay NaN).
template <typename value_t>
__global__ void finish_kernel(value_t* values, bool* mask, int64_t n, const Moments* moments) {
  const bool finite = moments->finite;
  for (uint64_t i = first_index(); i < static_cast<uint64_t>(n); i += grid_stride()) {
    const bool keep = finite && mask[i];
    mask[i] = keep;
    if (finite && !keep) values[i] = value_t(0);
  }
}

template <typename value_t>
void sparse_zscore_typed(const SparseZScoreJob& job) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = job.g.numel();
  const value_t* g = job.g.const_data_ptr<value_t>();
  value_t* values = job.values.mutable_data_ptr<value_t>();
  const at::Tensor moments = moments_cuda(AsDouble<value_t>{g}, n, job.eps, job.g);
  const Moments* m = reinterpret_cast<const Moments*>(moments.const_data_ptr<uint8_t>());
  if (job.check_finite) {  // before any output is written
    check_finite_data(job.op, true, moments_finite(moments), "g", job.g);
    if (job.score.defined()) {
      check_finite_data(job.op, true, at::isfinite(job.score).all().item<bool>(),
                        "score", job.score);
    }
  }
  at::Tensor keys = at::empty({n}, job.g.options().dtype(at::kLong));
  const bool default_score = !job.score.defined();
  zscore_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      g, values, default_score ? keys.mutable_data_ptr<int64_t>() : nullptr, n, m);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (!default_score) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.score.scalar_type(), "score", [&] {
      score_key_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
          job.score.const_data_ptr<scalar_t>(), keys.mutable_data_ptr<int64_t>(), n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const at::Tensor order = std::get<1>(at::sort(keys, /*stable=*/true, /*dim=*/0,
                                                /*descending=*/true));
  at::Tensor flat_mask = job.mask.view({-1});
  flat_mask.zero_();
  flat_mask.index_fill_(0, order.narrow(0, 0, job.k), true);
  finish_kernel<<<blocks_for(n), kThreads, 0, stream>>>(values, flat_mask.mutable_data_ptr<bool>(),
                                                        n, m);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_cuda(const SparseZScoreJob& job) {
  const c10::cuda::CUDAGuard guard(job.g.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.g.scalar_type(),
                                  "sparse_zscore_cuda", [&] { sparse_zscore_typed<scalar_t>(job); });
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CUDA, m) {
  m.impl("sparse_zscore", &sparse_zscore_kernel<launch_cuda>);
  m.impl("sparse_zscore_", &sparse_zscore_inplace_kernel<launch_cuda>);
}

}  // namespace sharpzo
