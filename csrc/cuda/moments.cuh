// Mean and standard deviation on CUDA in the order of Note [Deterministic reductions], without a
// host synchronization: each thread sums whole chunks, one thread adds the chunk sums in chunk
// order, and the result stays in device memory for the kernels that follow.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/launch.cuh"
#include "sharpzo/moments.h"

namespace sharpzo {

// Value functors: value(i) -> double.
template <typename scalar_t>
struct AsDouble {
  const scalar_t* x;
  __device__ double operator()(int64_t i) const { return static_cast<double>(x[i]); }
};

template <typename scalar_t>
struct AbsAsDouble {
  const scalar_t* x;
  __device__ double operator()(int64_t i) const { return fabs(static_cast<double>(x[i])); }
};

namespace moments_detail {

// (value(i) - mean)^2 with mean = *sum / n, read from device memory.
template <typename Value>
struct SquaredDeviation {
  Value value;
  const double* sum;
  int64_t n;
  __device__ double operator()(int64_t i) const {
    const double d = value(i) - *sum / static_cast<double>(n);
    return d * d;
  }
};

template <typename Value>
__global__ void chunk_sums_kernel(Value value, int64_t n, int64_t chunks, double* sums) {
  for (uint64_t c = first_index(); c < static_cast<uint64_t>(chunks); c += grid_stride()) {
    const int64_t begin = static_cast<int64_t>(c) * kChunkElements;
    sums[c] = chunk_sum(value, begin, begin + kChunkElements < n ? begin + kChunkElements : n);
  }
}

// *total = the sum of sums[0 .. chunks-1] in order (one thread). In moments.cu.
void launch_ordered_total(const double* sums, int64_t chunks, double* total, cudaStream_t stream);
// *out = make_moments(totals[0], totals[1], n, eps). In moments.cu.
void launch_make_moments(const double* totals, int64_t n, double eps, Moments* out,
                         cudaStream_t stream);

template <typename Value>
void ordered_sum_cuda(Value value, int64_t n, double* sums, double* total, cudaStream_t stream) {
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  chunk_sums_kernel<<<blocks_for(chunks), kThreads, 0, stream>>>(value, n, chunks, sums);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  launch_ordered_total(sums, chunks, total, stream);
}

}  // namespace moments_detail

// Moments of value(0 .. n-1), left in device memory: a uint8 tensor holding one Moments on the
// device of `like`, on the current stream.
template <typename Value>
at::Tensor moments_cuda(Value value, int64_t n, double eps, const at::Tensor& like) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  at::Tensor scratch = at::empty({chunks + 2}, like.options().dtype(at::kDouble));
  double* sums = scratch.mutable_data_ptr<double>();
  double* totals = sums + chunks;  // [sum, squared deviations]
  moments_detail::ordered_sum_cuda(value, n, sums, totals, stream);
  moments_detail::ordered_sum_cuda(moments_detail::SquaredDeviation<Value>{value, totals, n}, n,
                                   sums, totals + 1, stream);
  at::Tensor moments = at::empty({static_cast<int64_t>(sizeof(Moments))},
                                 like.options().dtype(at::kByte));
  moments_detail::launch_make_moments(
      totals, n, eps, reinterpret_cast<Moments*>(moments.mutable_data_ptr<uint8_t>()), stream);
  return moments;
}

// Whether the moments are finite: copies one flag to the host (a synchronization). In moments.cu.
bool moments_finite(const at::Tensor& moments);

}  // namespace sharpzo
