// The stream's transforms (uniform, Gaussian, Rademacher) against float64 evaluations of the
// formulas of docs/stream.md, exhaustively where the input space allows it.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>

#include "check.h"
#include "sharpzo/stream.h"

using namespace sharpzo;

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

double uniform64(uint32_t w) { return (static_cast<double>(w >> 9) + 0.5) * 0x1p-23; }

// Every one of the 2^23 possible uniforms is exact in float32.
void test_uniform_exact() {
  for (uint32_t k = 0; k < (1u << 23); ++k) {
    const uint32_t w = (k << 9) | (k & 0x1FF);  // low bits are dropped by the transform
    const float u = uniform_from_word(w);
    EXPECT(static_cast<double>(u) == uniform64(w), "uniform of %08x", w);
    if (static_cast<double>(u) != uniform64(w)) return;
  }
  EXPECT(uniform_from_word(0) > 0.0f && uniform_from_word(0xFFFFFFFFu) < 1.0f, "u in (0, 1)");
}

// ln u for all 2^23 uniforms: relative error (ln u is small near u = 1, so relative matters).
void test_log_exhaustive() {
  double worst = 0;
  for (int32_t K = 1; K < (1 << 24); K += 2) {
    const double exact = std::log(K * 0x1p-24);
    const double err = std::fabs(stream_detail::log_of_unit(K) - exact) / std::fabs(exact);
    worst = err > worst ? err : worst;
  }
  std::printf("  log: max relative error %.3g\n", worst);
  EXPECT(worst < 2e-7, "log relative error %.3g", worst);
}

// sin and cos of 2 pi u for all 2^23 uniforms.
void test_sincos_exhaustive() {
  double worst = 0;
  for (int32_t K = 1; K < (1 << 24); K += 2) {
    const stream_detail::SinCos sc = stream_detail::sincos_2pi_of_unit(K);
    const double angle = kTwoPi * (K * 0x1p-24);
    const double err = std::fmax(std::fabs(sc.sin - std::sin(angle)), std::fabs(sc.cos - std::cos(angle)));
    worst = err > worst ? err : worst;
  }
  std::printf("  sincos: max absolute error %.3g\n", worst);
  EXPECT(worst < 1.5e-7, "sincos absolute error %.3g", worst);
}

// Box-Muller against float64 over a grid that includes the extreme uniforms (largest |z|).
void test_box_muller_tolerance() {
  double worst = 0;  // in units of the contract's tolerance 1e-5 * (1 + |z|)
  for (uint32_t i = 0; i < 4096; ++i) {
    const uint32_t wa = i < 64 ? (i << 9) : (i * 0x9E3779B9u);             // tiny u first
    for (uint32_t k = 0; k < 4096; ++k) {
      const uint32_t wb = k < 64 ? ~(k << 9) : (k * 0x85EBCA6Bu + 12345u);  // u near 1 too
      const GaussianPair z = box_muller(wa, wb);
      const double r = std::sqrt(-2.0 * std::log(uniform64(wa)));
      const double c = r * std::cos(kTwoPi * uniform64(wb));
      const double s = r * std::sin(kTwoPi * uniform64(wb));
      const double err = std::fmax(std::fabs(z.z_cos - c) / (1e-5 * (1 + std::fabs(c))),
                                   std::fabs(z.z_sin - s) / (1e-5 * (1 + std::fabs(s))));
      worst = err > worst ? err : worst;
    }
  }
  std::printf("  box_muller: max error %.3g of the contract's tolerance\n", worst);
  EXPECT(worst < 0.03, "Box-Muller error %.3g of the tolerance", worst);
}

// Element j of the Rademacher stream is bit j % 32 of word (j / 32) % 4 of block j / 128.
void test_rademacher_mapping() {
  const StreamKey key = make_stream_key(0, 0);
  const Words4 block0{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};  // Philox KAT, all zero
  const uint32_t words[4] = {block0.w0, block0.w1, block0.w2, block0.w3};
  for (uint32_t j = 0; j < 128; ++j) {
    const float expected = ((words[j / 32] >> (j % 32)) & 1u) ? 1.0f : -1.0f;
    EXPECT(rademacher_from_block(stream_block(key, uint64_t{0}), j) == expected, "element %u", j);
    EXPECT(stream_quad(key, Distribution::kRademacher, j / 4).v[j % 4] == expected, "quad %u", j);
  }
}

// stream_quad (the CUDA kernel's view) equals the per-block definitions for Gaussians.
void test_gaussian_quad() {
  const StreamKey key = make_stream_key(0x123456789ABCDEFull, 42);
  for (uint64_t quad : {uint64_t{0}, uint64_t{1}, uint64_t{77}, (uint64_t{1} << 40) + 3}) {
    const Words4 w = stream_block(key, quad);
    const GaussianPair a = box_muller(w.w0, w.w1), b = box_muller(w.w2, w.w3);
    const Values4 v = stream_quad(key, Distribution::kGaussian, quad);
    EXPECT(v.v[0] == a.z_cos && v.v[1] == a.z_sin && v.v[2] == b.z_cos && v.v[3] == b.z_sin,
           "quad %llu", static_cast<unsigned long long>(quad));
  }
}

}  // namespace

int main() {
  test_uniform_exact();
  test_log_exhaustive();
  test_sincos_exhaustive();
  test_box_muller_tolerance();
  test_rademacher_mapping();
  test_gaussian_quad();
  return TEST_MAIN_RESULT("test_stream");
}
