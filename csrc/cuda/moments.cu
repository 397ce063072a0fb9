// The non-template parts of cuda/moments.cuh.
#include "cuda/moments.cuh"

namespace sharpzo {
namespace moments_detail {
namespace {

__global__ void ordered_total_kernel(const double* sums, int64_t chunks, double* total) {
  double t = 0;
  for (int64_t c = 0; c < chunks; ++c) t += sums[c];
  *total = t;
}

__global__ void make_moments_kernel(const double* totals, int64_t n, double eps, Moments* out) {
  *out = make_moments(totals[0], totals[1], n, eps);
}

}  // namespace

void launch_ordered_total(const double* sums, int64_t chunks, double* total, cudaStream_t stream) {
  ordered_total_kernel<<<1, 1, 0, stream>>>(sums, chunks, total);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_make_moments(const double* totals, int64_t n, double eps, Moments* out,
                         cudaStream_t stream) {
  make_moments_kernel<<<1, 1, 0, stream>>>(totals, n, eps, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace moments_detail

bool moments_finite(const at::Tensor& moments) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Moments host;
  C10_CUDA_CHECK(cudaMemcpyAsync(&host, moments.const_data_ptr<uint8_t>(), sizeof(Moments),
                                 cudaMemcpyDeviceToHost, stream));
  C10_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host.finite;
}

}  // namespace sharpzo
