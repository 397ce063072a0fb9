// Philox4x32 known-answer vectors (Random123's kat_vectors) and PyTorch's CPU generator constants.
#include <cstdint>

#include "check.h"
#include "sharpzo/philox.h"
#include "sharpzo/stream.h"

using sharpzo::Words4;

namespace {

struct Kat {
  int rounds;
  Words4 counter;
  uint32_t k0, k1;
  Words4 expected;
};

constexpr Kat kKats[] = {
    {10, {0, 0, 0, 0}, 0, 0, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {10, {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, 0xffffffff, 0xffffffff,
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {10, {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, 0xa4093822, 0x299f31d0,
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    {7, {0, 0, 0, 0}, 0, 0, {0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48}},
    {7, {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, 0xffffffff, 0xffffffff,
     {0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662}},
    {7, {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, 0xa4093822, 0x299f31d0,
     {0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a}},
};

bool equal(Words4 a, Words4 b) {
  return a.w0 == b.w0 && a.w1 == b.w1 && a.w2 == b.w2 && a.w3 == b.w3;
}

void test_known_answers() {
  for (const Kat& kat : kKats) {
    const Words4 out = kat.rounds == 10 ? sharpzo::philox4x32<10>(kat.counter, kat.k0, kat.k1)
                                        : sharpzo::philox4x32<7>(kat.counter, kat.k0, kat.k1);
    EXPECT(equal(out, kat.expected), "rounds %d counter %08x: got %08x %08x %08x %08x", kat.rounds,
           kat.counter.w0, out.w0, out.w1, out.w2, out.w3);
  }
}

// aten/src/ATen/test/cpu_generator_test.cpp: counter (offset, 0, 0, 0), key (seed, 0).
void test_pytorch_constants() {
  const Words4 a = sharpzo::philox4x32<10>(Words4{4, 0, 0, 0}, 0, 0);
  EXPECT(a.w0 == 4013802324u && a.w1 == 2979262830u, "seed 0 offset 4: %u %u", a.w0, a.w1);
  const Words4 b = sharpzo::philox4x32<10>(Words4{1, 0, 0, 0}, 10, 0);
  EXPECT(b.w0 == 2007330488u && b.w1 == 2354548925u, "seed 10 offset 1: %u %u", b.w0, b.w1);
}

// The stream's layout: key = (seed lo, seed hi), counter = (block lo, block hi, stream lo, hi).
void test_stream_layout() {
  const Kat& kat = kKats[2];
  const uint64_t seed = (uint64_t{kat.k1} << 32) | kat.k0;
  const uint64_t stream = (uint64_t{kat.counter.w3} << 32) | kat.counter.w2;
  const uint64_t block = (uint64_t{kat.counter.w1} << 32) | kat.counter.w0;
  const Words4 out = sharpzo::stream_block(sharpzo::make_stream_key(seed, stream), block);
  EXPECT(equal(out, kat.expected), "stream_block does not lay out seed/stream/block as specified");
}

// The packed variant computes exactly what the scalar one does, in both halves.
void test_two_blocks_per_word() {
  uint64_t state = 0x9E3779B97F4A7C15ull;
  const auto next = [&state] {  // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<uint32_t>(z ^ (z >> 31));
  };
  for (int i = 0; i < 10000; ++i) {
    const Words4 a{next(), next(), next(), next()}, b{next(), next(), next(), next()};
    const uint32_t k0 = next(), k1 = next();
    const auto pack = [](uint32_t x, uint32_t y) { return x | (uint64_t{y} << 32); };
    const sharpzo::Words4x2 packed{pack(a.w0, b.w0), pack(a.w1, b.w1), pack(a.w2, b.w2),
                                   pack(a.w3, b.w3)};
    const sharpzo::Words4x2 out = sharpzo::philox4x32_x2<10>(packed, k0, k1);
    const Words4 ra = sharpzo::philox4x32<10>(a, k0, k1), rb = sharpzo::philox4x32<10>(b, k0, k1);
    const bool same = out.w0 == pack(ra.w0, rb.w0) && out.w1 == pack(ra.w1, rb.w1) &&
                      out.w2 == pack(ra.w2, rb.w2) && out.w3 == pack(ra.w3, rb.w3);
    EXPECT(same, "packed Philox differs at iteration %d", i);
    if (!same) return;
  }
  const sharpzo::StreamKey key = sharpzo::make_stream_key(0x0123456789ABCDEFull, 0xFEDCBA9876543210ull);
  const sharpzo::Words4x2 pair = sharpzo::stream_block_pair(key, 0xFFFFFFFEu, 7u);
  const Words4 first = sharpzo::stream_block(key, (uint64_t{7} << 32) | 0xFFFFFFFEu);
  const Words4 second = sharpzo::stream_block(key, (uint64_t{7} << 32) | 0xFFFFFFFFu);
  EXPECT(static_cast<uint32_t>(pair.w0) == first.w0 && static_cast<uint32_t>(pair.w3 >> 32) == second.w3,
         "stream_block_pair does not hold blocks lo and lo + 1");
}

}  // namespace

int main() {
  test_two_blocks_per_word();
  test_known_answers();
  test_pytorch_constants();
  test_stream_layout();
  return TEST_MAIN_RESULT("test_philox");
}
