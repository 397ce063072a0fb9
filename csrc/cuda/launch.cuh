// Launch geometry shared by the CUDA kernels: grid-stride loops over `work` items.
#pragma once

#include <algorithm>
#include <cstdint>

namespace sharpzo {

constexpr int kThreads = 256;
constexpr uint64_t kMaxBlocks = 4096;  // grid-stride beyond this

inline unsigned blocks_for(uint64_t work) {
  return static_cast<unsigned>(std::max<uint64_t>(
      1, std::min<uint64_t>((work + kThreads - 1) / kThreads, kMaxBlocks)));
}

__device__ __forceinline__ uint64_t first_index() {
  return static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ uint64_t grid_stride() {
  return static_cast<uint64_t>(gridDim.x) * blockDim.x;
}

}  // namespace sharpzo
