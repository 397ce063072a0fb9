// Note [Same bits everywhere]: the Gaussian transform, vectorized for each ISA the CPU kernels
// are cloned for, gives the same bits as the scalar code (run for the ISAs this CPU has).
#include <cstdint>
#include <cstring>

#include "check.h"
#include "sharpzo/stream.h"

using namespace sharpzo;

namespace {

constexpr int kBlocks = 4096;

#define SHARPZO_GAUSSIAN_LOOP                                                    \
  for (uint32_t b = 0; b < kBlocks; ++b) {                                      \
    const Words4 w = stream_block(key, b, 0u);                                  \
    const GaussianPair first = box_muller(w.w0, w.w1), second = box_muller(w.w2, w.w3); \
    out[4 * b] = first.z_cos, out[4 * b + 1] = first.z_sin;                     \
    out[4 * b + 2] = second.z_cos, out[4 * b + 3] = second.z_sin;               \
  }

__attribute__((target("arch=x86-64-v4"), noinline)) void gaussians_v4(StreamKey key, float* __restrict out) {
  SHARPZO_GAUSSIAN_LOOP
}
__attribute__((target("arch=x86-64-v3"), noinline)) void gaussians_v3(StreamKey key, float* __restrict out) {
  SHARPZO_GAUSSIAN_LOOP
}
__attribute__((noinline)) void gaussians_baseline(StreamKey key, float* __restrict out) {
  SHARPZO_GAUSSIAN_LOOP
}

__attribute__((optimize("no-tree-vectorize"), noinline)) void gaussians_scalar(StreamKey key, float* __restrict out) {
  SHARPZO_GAUSSIAN_LOOP
}

float reference[4 * kBlocks], candidate[4 * kBlocks];

void expect_same(const char* isa) {
  EXPECT(std::memcmp(reference, candidate, sizeof(reference)) == 0,
         "%s Gaussians differ from the scalar code", isa);
}

}  // namespace

int main() {
  const StreamKey key = make_stream_key(20251123, 5);
  gaussians_scalar(key, reference);
  gaussians_baseline(key, candidate);
  expect_same("baseline");
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    gaussians_v3(key, candidate);
    expect_same("x86-64-v3");
  }
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    gaussians_v4(key, candidate);
    expect_same("x86-64-v4");
  }
  return TEST_MAIN_RESULT("test_isa_agreement");
}
