// The CPU perturbation kernels' stream generators: one tile of the stream at a time, written as
// loops the compiler vectorizes. Header-only and torch-free so that the kernel (cpu/perturb.cpp,
// which compiles them once per ISA, Note [CPU ISA dispatch]) and the C++ tests
// (test_isa_agreement.cpp, which checks every ISA's code against the scalar definition) compile
// the same loops.
#pragma once

#include <cstdint>

#include "sharpzo/macros.h"
#include "sharpzo/stream.h"

namespace sharpzo {

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

// The two blocks of a packed pair (Note [Two Philox blocks per 64-bit word]).
SHARPZO_INLINE uint32_t first_of(uint64_t packed) { return static_cast<uint32_t>(packed); }
SHARPZO_INLINE uint32_t second_of(uint64_t packed) { return static_cast<uint32_t>(packed >> 32); }

// Stream elements 256 tile .. 256 tile + 255, Gaussian.
SHARPZO_INLINE void gaussian_tile(StreamKey key, uint64_t tile, float* __restrict out) {
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

// Stream elements 256 tile .. 256 tile + 255, Rademacher.
SHARPZO_INLINE void rademacher_tile(StreamKey key, uint64_t tile, float* __restrict out) {
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

}  // namespace sharpzo
