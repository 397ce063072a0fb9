// The CPU perturbation kernels' stream generators: one tile of the stream at a time, written as
// loops the compiler vectorizes, except for Philox on x86 (sharpzo/philox_x86.h). Header-only
// and torch-free so that the kernel (cpu/perturb.cpp, which compiles them once per ISA, Note
// [CPU ISA dispatch]) and the C++ tests (test_isa_agreement.cpp, which checks every ISA's code
// against the scalar definition) compile the same loops.
#pragma once

#include <cstdint>

#include "sharpzo/macros.h"
#include "sharpzo/stream.h"

#if defined(SHARPZO_X86_CLONES)
#include "sharpzo/philox_x86.h"
#endif

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

// The Philox words of a Gaussian tile's 64 blocks, as structure of arrays.
struct GaussianTileWords {
  alignas(64) uint32_t w0[kGaussianBlocksPerTile];
  alignas(64) uint32_t w1[kGaussianBlocksPerTile];
  alignas(64) uint32_t w2[kGaussianBlocksPerTile];
  alignas(64) uint32_t w3[kGaussianBlocksPerTile];
};

SHARPZO_INLINE uint64_t first_gaussian_block(uint64_t tile) {
  return tile * kGaussianBlocksPerTile;
}

// Philox two blocks at a time (Note [Two Philox blocks per 64-bit word]), vectorized across pairs.
SHARPZO_INLINE void gaussian_tile_words(StreamKey key, uint64_t tile, GaussianTileWords& w) {
  const uint64_t first_block = first_gaussian_block(tile);
  const uint32_t block_lo = static_cast<uint32_t>(first_block);
  const uint32_t block_hi = static_cast<uint32_t>(first_block >> 32);
  for (uint32_t p = 0; p < kGaussianBlocksPerTile / 2; ++p) {
    const Words4x2 pair = stream_block_pair(key, block_lo + 2 * p, block_hi);
    w.w0[2 * p] = first_of(pair.w0), w.w0[2 * p + 1] = second_of(pair.w0);
    w.w1[2 * p] = first_of(pair.w1), w.w1[2 * p + 1] = second_of(pair.w1);
    w.w2[2 * p] = first_of(pair.w2), w.w2[2 * p + 1] = second_of(pair.w2);
    w.w3[2 * p] = first_of(pair.w3), w.w3[2 * p + 1] = second_of(pair.w3);
  }
}

// Box-Muller into structure-of-arrays lanes (vectorized across blocks), then stream order.
SHARPZO_INLINE void gaussian_from_words(const GaussianTileWords& w, float* __restrict out) {
  constexpr uint32_t kBlocks = kGaussianBlocksPerTile;
  float lane0[kBlocks], lane1[kBlocks], lane2[kBlocks], lane3[kBlocks];
  for (uint32_t b = 0; b < kBlocks; ++b) {
    const GaussianPair first = box_muller(w.w0[b], w.w1[b]);
    const GaussianPair second = box_muller(w.w2[b], w.w3[b]);
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

// Stream elements 256 tile .. 256 tile + 255, Gaussian: the portable tile (baseline x86, ARM).
SHARPZO_INLINE void gaussian_tile(StreamKey key, uint64_t tile, float* __restrict out) {
  GaussianTileWords w;
  gaussian_tile_words(key, tile, w);
  gaussian_from_words(w, out);
}

#if defined(SHARPZO_X86_CLONES)
// The same tile with Philox on the vector units (Note [Philox on x86 vector units]).
SHARPZO_AVX512_INLINE void gaussian_tile_avx512(StreamKey key, uint64_t tile,
                                                float* __restrict out) {
  GaussianTileWords w;
  philox_blocks_avx512(key, first_gaussian_block(tile), kGaussianBlocksPerTile, w.w0, w.w1, w.w2,
                       w.w3);
  gaussian_from_words(w, out);
}

SHARPZO_AVX2_INLINE void gaussian_tile_avx2(StreamKey key, uint64_t tile, float* __restrict out) {
  GaussianTileWords w;
  philox_blocks_avx2(key, first_gaussian_block(tile), kGaussianBlocksPerTile, w.w0, w.w1, w.w2,
                     w.w3);
  gaussian_from_words(w, out);
}
#endif

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
