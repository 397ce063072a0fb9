// Note [Same bits everywhere], across architectures: digests of the stream's bits, recorded on
// x86-64, that every build must reproduce exactly. `make test` runs this test natively and, built
// with an aarch64 cross-compiler, under qemu-user (cmake/aarch64-linux-gnu.cmake), so an ARM
// build is shown to compute the same Gaussians and Rademacher signs bit for bit.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>

#include "check.h"
#include "sharpzo/cpu_tiles.h"
#include "sharpzo/stream.h"

using namespace sharpzo;

namespace {

// FNV-1a over 32-bit values.
struct Digest {
  uint64_t state = 0xcbf29ce484222325ull;
  void add(uint32_t value) {
    for (int byte = 0; byte < 4; ++byte) {
      state = (state ^ ((value >> (8 * byte)) & 0xFFu)) * 0x100000001b3ull;
    }
  }
  void add(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    add(bits);
  }
};

void expect_digest(const char* what, const Digest& got, uint64_t expected) {
  EXPECT(got.state == expected, "%s: digest %016llx, recorded on x86-64 %016llx", what,
         static_cast<unsigned long long>(got.state), static_cast<unsigned long long>(expected));
}

// The polynomial log, sin and cos of every one of the 2^23 uniforms.
void test_transforms() {
  Digest log_digest, sincos_digest;
  for (int32_t K = 1; K < (1 << 24); K += 2) {
    log_digest.add(stream_detail::log_of_unit(K));
    const stream_detail::SinCos sc = stream_detail::sincos_2pi_of_unit(K);
    sincos_digest.add(sc.sin);
    sincos_digest.add(sc.cos);
  }
  expect_digest("log_of_unit", log_digest, 0x798a2a604e6cd427ull);
  expect_digest("sincos_2pi_of_unit", sincos_digest, 0xdf5a4bbc673229f5ull);
}

// The CPU tiles (the code the kernels run on this architecture) of two streams, over the first
// 4096 tiles (2^20 elements) and tiles around the carry into the block counter's high word.
void test_tiles() {
  Digest gaussian, rademacher;
  float out[kTileElements];
  const uint64_t carry = (uint64_t{1} << 32) / kGaussianBlocksPerTile;
  for (const uint64_t seed : {uint64_t{0}, uint64_t{0x123456789ABCDEFull}}) {
    const StreamKey key = make_stream_key(seed, seed ^ 77);
    for (uint64_t t = 0; t < 4096 + 4; ++t) {
      const uint64_t tile = t < 4096 ? t : carry - 2 + (t - 4096);
      gaussian_tile(key, tile, out);
      for (const float z : out) gaussian.add(z);
      rademacher_tile(key, tile, out);
      for (const float z : out) rademacher.add(z);
    }
  }
  expect_digest("gaussian_tile", gaussian, 0x69ed70b89d652e67ull);
  expect_digest("rademacher_tile", rademacher, 0xd46b9ac5d23d4225ull);
}

}  // namespace

int main() {
  test_transforms();
  test_tiles();
  return TEST_MAIN_RESULT("test_stream_bits");
}
