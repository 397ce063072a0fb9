// Note [quantize_rows arithmetic] (sharpzo/quantize.h): known answers, and rounding equal to
// round-half-even (std::nearbyint under the default rounding mode) over a dense grid.
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <limits>

#include "check.h"
#include "sharpzo/quantize.h"

using namespace sharpzo;

int main() {
  EXPECT(row_scale(0, 127.0f) == 1.0f, "a row of zeros has scale 1");
  EXPECT(row_scale(abs_bits(1e-44f), 127.0f) == 1.0f, "max|x| / 127 rounding to 0 gives scale 1");
  EXPECT(row_scale(abs_bits(-127.0f), 127.0f) == 1.0f, "max|x| = 127 gives scale 1");
  EXPECT(row_scale(abs_bits(2.54f), 127.0f) == 2.54f / 127.0f, "s = max|x| / 127 in float32");
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT(std::isnan(row_scale(abs_bits(-inf), 127.0f)), "inf: NaN");
  EXPECT(std::isnan(row_scale(abs_bits(std::nanf("")), 127.0f)), "NaN: NaN");
  EXPECT(abs_bits(-3.0f) > abs_bits(2.0f) && abs_bits(1e30f) < kInfBits, "bit order");

  const struct { float x; int q; } known[] = {
      {0.0f, 128}, {-0.0f, 128}, {0.5f, 128}, {1.5f, 130}, {2.5f, 130}, {-0.5f, 128},
      {-1.5f, 126}, {-2.5f, 126}, {126.5f, 254}, {127.0f, 255}, {-127.0f, 1}, {300.0f, 255},
      {-300.0f, 1}, {0.49999997f, 128}};
  for (const auto& k : known) {
    const int q = quantize_value(k.x, 1.0f, 127.0f);
    EXPECT(q == k.q, "quantize_value(%.9g, 1) = %d, expected %d", k.x, q, k.q);
  }
  EXPECT(quantize_value(5.0f, std::nanf(""), 127.0f) == 128, "a NaN scale gives 128");
  EXPECT(row_scale(abs_bits(1.26f), 63.0f) == 1.26f / 63.0f, "s = max|x| / 63 for 7 bits");
  EXPECT(row_scale(abs_bits(1e-44f), 63.0f) == 1.0f, "max|x| / 63 rounding to 0 gives scale 1");
  const struct { float x; int q; } known7[] = {
      {62.5f, 190}, {63.0f, 191}, {-63.0f, 65}, {100.0f, 191}, {-100.0f, 65}, {31.5f, 160}};
  for (const auto& k : known7) {
    const int q = quantize_value(k.x, 1.0f, 63.0f);
    EXPECT(q == k.q, "quantize_value(%.9g, 1, 63) = %d, expected %d", k.x, q, k.q);
  }

  std::fesetround(FE_TONEAREST);
  int mismatches = 0;
  for (int i = -2000000; i <= 2000000; ++i) {
    const float x = static_cast<float>(i) * 7.1e-5f;
    const float s = 0.73f;
    float y = x / s;
    y = std::fmax(-127.0f, std::fmin(127.0f, y));
    const int expected = static_cast<int>(std::nearbyint(y)) + 128;
    mismatches += quantize_value(x, s, 127.0f) != expected;
  }
  EXPECT(mismatches == 0, "%d values round differently from nearbyint", mismatches);
  return TEST_MAIN_RESULT("test_quantize");
}
