// CPU kernels of perturb_ and sample_ (schemas: csrc/ops.cpp, reference: sharpzo_ext/reference.py).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/bit_cast.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "perturb.h"
#include "sharpzo/stream.h"

namespace sharpzo {
namespace {

// Note [CPU perturbation tiles]
// The stream is cut into tiles of kTileElements consecutive stream indices starting at multiples
// of kTileElements, so a tile's Philox counters differ only in their low word (no carry). A
// tile's values are generated into a stack buffer by a loop with a fixed trip count (vectorized,
// see Note [CPU ISA dispatch]) and then applied to the part of the tensor that falls into the
// tile. Threads take whole tiles, and a tensor's partial head and tail tiles run the same code as
// its body, so each element is computed by the same instructions whatever the thread count,
// slicing or offset: results are bit-identical across all of them.
constexpr int64_t kTileElements = 256;
constexpr uint32_t kGaussianBlocksPerTile = kTileElements / kGaussianPerBlock;     // 64
constexpr uint32_t kRademacherBlocksPerTile = kTileElements / kRademacherPerBlock;  // 2
constexpr int64_t kTilesPerTask = 64;  // 16K elements per parallel task at least

// The two blocks of a packed pair (Note [Two Philox blocks per 64-bit word]).
inline uint32_t first_of(uint64_t packed) { return static_cast<uint32_t>(packed); }
inline uint32_t second_of(uint64_t packed) { return static_cast<uint32_t>(packed >> 32); }

SHARPZO_CPU_CLONES void gaussian_tile(StreamKey key, uint64_t tile, float* __restrict out) {
  constexpr uint32_t kBlocks = kGaussianBlocksPerTile;
  const uint64_t first_block = tile * kBlocks;
  const uint32_t block_lo = static_cast<uint32_t>(first_block);
  const uint32_t block_hi = static_cast<uint32_t>(first_block >> 32);
  // Three loops, each vectorized across blocks: Philox two blocks at a time into structure-of-
  // arrays words, Box-Muller into structure-of-arrays lanes, then interleave into stream order.
  uint32_t w0[kBlocks], w1[kBlocks], w2[kBlocks], w3[kBlocks];
  for (uint32_t p = 0; p < kBlocks / 2; ++p) {
    const Words4x2 w = stream_block_pair(key, block_lo + 2 * p, block_hi);
    w0[2 * p] = first_of(w.w0), w0[2 * p + 1] = second_of(w.w0);
    w1[2 * p] = first_of(w.w1), w1[2 * p + 1] = second_of(w.w1);
    w2[2 * p] = first_of(w.w2), w2[2 * p + 1] = second_of(w.w2);
    w3[2 * p] = first_of(w.w3), w3[2 * p + 1] = second_of(w.w3);
  }
  float lane0[kBlocks], lane1[kBlocks], lane2[kBlocks], lane3[kBlocks];
  for (uint32_t b = 0; b < kBlocks; ++b) {
    const GaussianPair first = box_muller(w0[b], w1[b]);
    const GaussianPair second = box_muller(w2[b], w3[b]);
    lane0[b] = first.z_cos, lane1[b] = first.z_sin;
    lane2[b] = second.z_cos, lane3[b] = second.z_sin;
  }
  for (uint32_t b = 0; b < kBlocks; ++b) {
    out[4 * b + 0] = lane0[b];
    out[4 * b + 1] = lane1[b];
    out[4 * b + 2] = lane2[b];
    out[4 * b + 3] = lane3[b];
  }
}

SHARPZO_CPU_CLONES void rademacher_tile(StreamKey key, uint64_t tile, float* __restrict out) {
  static_assert(kRademacherBlocksPerTile == 2, "one packed pair of blocks per tile");
  const uint64_t first_block = tile * kRademacherBlocksPerTile;
  const Words4x2 w = stream_block_pair(key, static_cast<uint32_t>(first_block),
                                       static_cast<uint32_t>(first_block >> 32));
  const uint32_t words[8] = {first_of(w.w0),  first_of(w.w1),  first_of(w.w2),  first_of(w.w3),
                             second_of(w.w0), second_of(w.w1), second_of(w.w2), second_of(w.w3)};
  for (uint32_t k = 0; k < 8; ++k) {
    for (uint32_t bit = 0; bit < 32; ++bit) out[32 * k + bit] = rademacher_from_bit(words[k], bit);
  }
}

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

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

template <typename scalar_t, bool kAdd>
void perturb_tiles(const PerturbJob& job) {
  scalar_t* const x = job.x.mutable_data_ptr<scalar_t>();
  const int64_t n = job.x.numel();
  const uint64_t begin = job.offset, end = job.offset + static_cast<uint64_t>(n);
  const uint64_t first_tile = begin / kTileElements;
  const int64_t tiles = static_cast<int64_t>((end - 1) / kTileElements - first_tile + 1);
  const auto fill = job.dist == Distribution::kGaussian ? gaussian_tile : rademacher_tile;
  const auto scale = static_cast<acc_type<scalar_t>>(job.scale);
  at::parallel_for(0, tiles, kTilesPerTask, [&](int64_t tile_begin, int64_t tile_end) {
    alignas(64) float z[kTileElements];
    for (int64_t t = tile_begin; t < tile_end; ++t) {
      const uint64_t tile = first_tile + static_cast<uint64_t>(t);
      const uint64_t tile_start = tile * kTileElements;
      const uint64_t lo = std::max(tile_start, begin);
      const uint64_t hi = std::min(tile_start + kTileElements, end);
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
