// Note [Same bits everywhere]: the tile generators that the CPU kernels ship
// (sharpzo/cpu_tiles.h), compiled for each ISA the kernels are cloned for, give the same bits as
// the scalar definition of the stream (one Philox block per element: stream_block, box_muller,
// rademacher_from_block), for the ISAs this CPU has.
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "check.h"
#include "sharpzo/cpu_tiles.h"
#include "sharpzo/stream.h"

using namespace sharpzo;

namespace {

using TileFn = void (*)(StreamKey, uint64_t, float*);

// Each ISA's Gaussian tile as perturb.cpp ships it, and the Rademacher tile compiled for the ISA.
#define SHARPZO_TILES_FOR(suffix, attributes, gaussian_tile_fn)                      \
  attributes void gaussian_##suffix(StreamKey key, uint64_t tile, float* out) {      \
    gaussian_tile_fn(key, tile, out);                                                 \
  }                                                                                   \
  attributes void rademacher_##suffix(StreamKey key, uint64_t tile, float* out) {    \
    rademacher_tile(key, tile, out);                                                  \
  }

SHARPZO_TILES_FOR(v4, __attribute__((target("arch=x86-64-v4"), noinline)), gaussian_tile_avx512)
SHARPZO_TILES_FOR(v3, __attribute__((target("arch=x86-64-v3"), noinline)), gaussian_tile_avx2)
SHARPZO_TILES_FOR(baseline, __attribute__((noinline)), gaussian_tile)

// Element j of the stream by its definition, one element at a time and never vectorized.
__attribute__((optimize("no-tree-vectorize"), noinline)) void scalar_tile(
    StreamKey key, Distribution dist, uint64_t tile, float* out) {
  for (uint64_t e = 0; e < kTileElements; ++e) {
    const uint64_t j = tile * kTileElements + e;
    if (dist == Distribution::kRademacher) {
      out[e] = rademacher_from_block(stream_block(key, j / kRademacherPerBlock),
                                     static_cast<uint32_t>(j % kRademacherPerBlock));
      continue;
    }
    const Words4 w = stream_block(key, j / kGaussianPerBlock);
    const GaussianPair pair = j % 4 < 2 ? box_muller(w.w0, w.w1) : box_muller(w.w2, w.w3);
    out[e] = j % 2 == 0 ? pair.z_cos : pair.z_sin;
  }
}

void expect_same(const char* isa, TileFn gaussian, TileFn rademacher) {
  const StreamKey key = make_stream_key(20251123, (uint64_t{7} << 40) | 5);
  float expected[kTileElements], got[kTileElements];
  // tiles at the start, in the middle, and around the carries into the block counter's high word
  const uint64_t last_low = (uint64_t{1} << 32) / kGaussianBlocksPerTile - 1;
  for (const uint64_t tile : {uint64_t{0}, uint64_t{1}, uint64_t{12345}, last_low, last_low + 1,
                              uint64_t{1} << 40}) {
    scalar_tile(key, Distribution::kGaussian, tile, expected);
    gaussian(key, tile, got);
    EXPECT(std::memcmp(expected, got, sizeof(got)) == 0,
           "%s Gaussian tile %llu differs from the scalar definition", isa,
           static_cast<unsigned long long>(tile));
    scalar_tile(key, Distribution::kRademacher, tile, expected);
    rademacher(key, tile, got);
    EXPECT(std::memcmp(expected, got, sizeof(got)) == 0,
           "%s Rademacher tile %llu differs from the scalar definition", isa,
           static_cast<unsigned long long>(tile));
  }
}

}  // namespace

int main() {
  expect_same("baseline", gaussian_baseline, rademacher_baseline);
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    expect_same("x86-64-v3", gaussian_v3, rademacher_v3);
  }
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    expect_same("x86-64-v4", gaussian_v4, rademacher_v4);
  }
  return TEST_MAIN_RESULT("test_isa_agreement");
}
