// CPU kernels of perturb_ and sample_ (schemas: csrc/ops.cpp, reference:
// sharpzo_ext/ops/reference.py).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/bit_cast.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "perturb.h"
#include "sharpzo/acc_type.h"
#include "sharpzo/cpu_tiles.h"
#include "sharpzo/stream.h"

namespace sharpzo {
namespace {

constexpr int64_t kTilesPerTask = 64;  // 16K elements per parallel task at least

// The tile generators of sharpzo/cpu_tiles.h, compiled for each ISA. The Gaussian's x86 clones
// have their own code (Note [Philox on x86 vector units]), so they are versions of one function
// (GCC function multiversioning: the same load-time choice as target_clones) rather than clones.
#if defined(SHARPZO_X86_CLONES)
__attribute__((target("default"))) void gaussian_tile_cpu(StreamKey key, uint64_t tile,
                                                          float* __restrict out) {
  gaussian_tile(key, tile, out);
}

__attribute__((target("arch=x86-64-v3"))) void gaussian_tile_cpu(StreamKey key, uint64_t tile,
                                                                 float* __restrict out) {
  gaussian_tile_avx2(key, tile, out);
}

#if !defined(SHARPZO_CPU_NO_AVX512)
__attribute__((target("arch=x86-64-v4"))) void gaussian_tile_cpu(StreamKey key, uint64_t tile,
                                                                 float* __restrict out) {
  gaussian_tile_avx512(key, tile, out);
}
#endif
#else
void gaussian_tile_cpu(StreamKey key, uint64_t tile, float* __restrict out) {
  gaussian_tile(key, tile, out);
}
#endif

SHARPZO_CPU_CLONES void rademacher_tile_cpu(StreamKey key, uint64_t tile, float* __restrict out) {
  rademacher_tile(key, tile, out);
}

// x[i] = x[i] + scale * z[i] (kAdd) or z[i], where mask[i] if mask is given.
template <typename scalar_t, bool kAdd>
SHARPZO_CPU_CLONES void apply_tile(scalar_t* __restrict x, const uint8_t* __restrict mask,
                                   const float* __restrict z, acc_type<scalar_t> scale,
                                   int64_t n) {
  using acc_t = acc_type<scalar_t>;
  const auto value = [&](int64_t i) {
    return kAdd ? static_cast<scalar_t>(static_cast<acc_t>(x[i]) + scale * static_cast<acc_t>(z[i]))
                : static_cast<scalar_t>(z[i]);
  };
  if (mask == nullptr) {
    for (int64_t i = 0; i < n; ++i) x[i] = value(i);
  } else {
    // Both sides computed and selected as integers of the element's width: a select that
    // vectorizes for every dtype (a select of c10::Half / c10::BFloat16 values does not).
    using bits_t = std::conditional_t<sizeof(scalar_t) == 2, uint16_t,
                                      std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>>;
    for (int64_t i = 0; i < n; ++i) {
      const auto old = c10::bit_cast<bits_t>(x[i]);
      const auto updated = c10::bit_cast<bits_t>(value(i));
      x[i] = c10::bit_cast<scalar_t>(mask[i] != 0 ? updated : old);
    }
  }
}

// Note [Prefetching the next tile]
// x is not touched while a tile's values are computed, so the hardware prefetchers (which follow
// accesses) sit idle then, and each tile's loads and stores of x start cold. Asking for the next
// tile's cache lines before computing this one overlaps memory with the computation: 1.3-1.5x
// on perturb_ at 2^24, Gaussian and Rademacher (Intel Xeon, 2 threads).
template <typename scalar_t>
void prefetch_for_writing(const scalar_t* x, const uint8_t* mask, uint64_t n) {
  constexpr uint64_t kLine = 64;
  const auto* bytes = reinterpret_cast<const char*>(x);
  for (uint64_t b = 0; b < n * sizeof(scalar_t); b += kLine) __builtin_prefetch(bytes + b, 1);
  if (mask != nullptr) {
    for (uint64_t b = 0; b < n; b += kLine) __builtin_prefetch(mask + b, 0);
  }
}

template <typename scalar_t, bool kAdd>
void perturb_tiles(const PerturbJob& job) {
  scalar_t* const x = job.x.mutable_data_ptr<scalar_t>();
  const int64_t n = job.x.numel();
  const uint64_t begin = job.offset, end = job.offset + static_cast<uint64_t>(n);
  const uint64_t first_tile = begin / kTileElements;
  const int64_t tiles = static_cast<int64_t>((end - 1) / kTileElements - first_tile + 1);
  using TileFn = void (*)(StreamKey, uint64_t, float* __restrict);
  const TileFn gaussian = gaussian_tile_cpu, rademacher = rademacher_tile_cpu;
  const TileFn fill = job.dist == Distribution::kGaussian ? gaussian : rademacher;
  const auto scale = static_cast<acc_type<scalar_t>>(job.scale);
  at::parallel_for(0, tiles, kTilesPerTask, [&](int64_t tile_begin, int64_t tile_end) {
    alignas(64) float z[kTileElements];
    for (int64_t t = tile_begin; t < tile_end; ++t) {
      const uint64_t tile = first_tile + static_cast<uint64_t>(t);
      const uint64_t tile_start = tile * kTileElements;
      const uint64_t lo = std::max(tile_start, begin);
      const uint64_t hi = std::min(tile_start + kTileElements, end);
      const int64_t next = static_cast<int64_t>(hi - begin);
      prefetch_for_writing(x + next, job.mask == nullptr ? nullptr : job.mask + next,
                           std::min<uint64_t>(kTileElements, end - hi));
      fill(job.key, tile, z);
      const int64_t i = static_cast<int64_t>(lo - begin);
      apply_tile<scalar_t, kAdd>(x + i, job.mask == nullptr ? nullptr : job.mask + i,
                                 z + (lo - tile_start), scale, static_cast<int64_t>(hi - lo));
    }
  });
}

void launch_cpu(const PerturbJob& job) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.x.scalar_type(), "perturb_cpu", [&] {
    if (job.add) {
      perturb_tiles<scalar_t, true>(job);
    } else {
      perturb_tiles<scalar_t, false>(job);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CPU, m) {
  m.impl("perturb_", &perturb_kernel<launch_cpu>);
  m.impl("sample_", &sample_kernel<launch_cpu>);
}

}  // namespace sharpzo
