// CUDA kernels of perturb_ and sample_ (schemas: csrc/ops.cpp, reference:
// sharpzo_ext/ops/reference.py).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "cuda/launch.cuh"
#include "perturb.h"
#include "sharpzo/acc_type.h"
#include "sharpzo/stream.h"

namespace sharpzo {
namespace {

// Each thread owns aligned quads of stream indices (4 quad .. 4 quad + 3): one Philox block gives
// their values (Note [Philox per quad on CUDA]). Values depend on the element's stream index only,
// never on the thread or the launch geometry.
template <typename scalar_t, bool kAdd>
__global__ void stream_kernel(scalar_t* __restrict__ x, const uint8_t* __restrict__ mask, int64_t n,
                               uint64_t offset, StreamKey key, Distribution dist,
                               acc_type<scalar_t> scale) {
  using acc_t = acc_type<scalar_t>;
  const uint64_t end = offset + static_cast<uint64_t>(n);
  const uint64_t first_quad = offset / 4;
  const uint64_t quads = (end - 1) / 4 - first_quad + 1;
  for (uint64_t q = first_index(); q < quads; q += grid_stride()) {
    const uint64_t quad = first_quad + q;
    const Values4 z = stream_quad(key, dist, quad);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const uint64_t j = 4 * quad + lane;
      if (j < offset || j >= end) continue;
      const uint64_t i = j - offset;
      if (mask != nullptr && mask[i] == 0) continue;
      x[i] = kAdd ? static_cast<scalar_t>(static_cast<acc_t>(x[i]) + scale * static_cast<acc_t>(z.v[lane]))
                  : static_cast<scalar_t>(z.v[lane]);
    }
  }
}

// Note [Philox per quad on CUDA]
// A Rademacher block holds 128 elements but a thread computes the block for its 4: 32x redundant
// Philox work, which the GPU's integer throughput absorbs (the kernel stays memory-bound) in
// exchange for a kernel with no shared memory and no inter-thread dependence.
void launch_cuda(const PerturbJob& job) {
  const c10::cuda::CUDAGuard guard(job.x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = job.x.numel();
  const uint64_t quads = (job.offset + n - 1) / 4 - job.offset / 4 + 1;
  const unsigned blocks = blocks_for(quads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.x.scalar_type(), "perturb_cuda", [&] {
    scalar_t* x = job.x.mutable_data_ptr<scalar_t>();
    const auto scale = static_cast<acc_type<scalar_t>>(job.scale);
    if (job.add) {
      stream_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(x, job.mask, n, job.offset,
                                                                      job.key, job.dist, scale);
    } else {
      stream_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(x, job.mask, n, job.offset,
                                                                       job.key, job.dist, scale);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CUDA, m) {
  m.impl("perturb_", &perturb_kernel<launch_cuda>);
  m.impl("sample_", &sample_kernel<launch_cuda>);
}

}  // namespace sharpzo
