// Philox4x32-10 on x86 vector units, for the CPU Gaussian tiles (sharpzo/cpu_tiles.h): many
// consecutive blocks of one stream at once, with exactly philox4x32's arithmetic (so exactly its
// bits; test_isa_agreement.cpp compares them). x86-64 with GCC only (SHARPZO_X86_CLONES).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "sharpzo/macros.h"
#include "sharpzo/philox.h"
#include "sharpzo/stream.h"

namespace sharpzo {

// Note [Philox on x86 vector units]
// Philox needs the high and low halves of 32 x 32 -> 64-bit products. The x86 instruction for
// them, vpmuludq, multiplies the low 32 bits of each 64-bit lane. GCC does not emit it from
// plain C: a loop over 32-bit words vectorizes with widening and narrowing shuffles around it,
// and the packed form (Note [Two Philox blocks per 64-bit word]) becomes a full 64 x 64-bit
// multiply, which is vpmullq where AVX-512DQ exists: 3 micro-ops with 15 cycles of latency on
// Intel cores (cheap on AMD Zen 4), and three vpmuludq plus shifts and adds under AVX2. So the
// rounds are written here with intrinsics, in a split form that needs no shuffle per round:
// vector E holds the even-numbered blocks of a group and vector O the odd ones, each block's
// word in the low half of a 64-bit lane. vpmuludq reads only those low halves, so a product's
// low half is used as it is (the high half that rides along is never read), and its high half
// is shifted down once. A round is then, per vector of 8 blocks, 2 vpmuludq, 2 shifts and 2
// three-way XORs (vpternlogd), all single micro-ops on Intel and AMD alike (uops.info). The
// words are merged into 32-bit lanes once, after the tenth round.
#define SHARPZO_AVX512_INLINE __attribute__((target("arch=x86-64-v4"), always_inline)) inline
#define SHARPZO_AVX2_INLINE __attribute__((target("arch=x86-64-v3"), always_inline)) inline

// The low halves of the 64-bit lanes of `even` and `odd` as 32-bit lanes 2i and 2i + 1 (a dword
// swap moves the odd ones up).
SHARPZO_AVX512_INLINE __m512i merge_avx512(__m512i even, __m512i odd) {
  return _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CDAB);
}

SHARPZO_AVX2_INLINE __m256i merge_avx2(__m256i even, __m256i odd) {
  constexpr int kSwapDwords = 0xB1;  // (1, 0, 3, 2)
  constexpr int kOddDwords = 0xAA;
  return _mm256_blend_epi32(even, _mm256_shuffle_epi32(odd, kSwapDwords), kOddDwords);
}

// The x86-64-v4 clone's group: blocks block_lo .. block_lo + 31 (no carry into block_hi), their
// words k stored to wk[0..31].
SHARPZO_AVX512_INLINE void philox_group_avx512(StreamKey key, uint32_t block_lo,
                                               uint32_t block_hi, uint32_t* __restrict w0,
                                               uint32_t* __restrict w1, uint32_t* __restrict w2,
                                               uint32_t* __restrict w3) {
  constexpr int kVectors = 4;  // even and odd blocks of two groups of 16: independent chains
  constexpr int kXor3 = 0x96;  // vpternlogd's truth table of a ^ b ^ c
  __m512i c0[kVectors], c1[kVectors], c2[kVectors], c3[kVectors];
  const __m512i steps = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  for (int v = 0; v < kVectors; ++v) {  // vector v: blocks block_lo + 16 (v / 2) + v % 2 + 2 i
    c0[v] = _mm512_add_epi64(_mm512_set1_epi64(block_lo + 16u * (v / 2) + v % 2), steps);
    c1[v] = _mm512_set1_epi32(static_cast<int>(block_hi));
    c2[v] = _mm512_set1_epi32(static_cast<int>(key.stream_lo));
    c3[v] = _mm512_set1_epi32(static_cast<int>(key.stream_hi));
  }
  const __m512i mul0 = _mm512_set1_epi64(philox_detail::kMul0);
  const __m512i mul1 = _mm512_set1_epi64(philox_detail::kMul1);
  uint32_t k0 = key.seed_lo, k1 = key.seed_hi;
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += philox_detail::kBump0;
      k1 += philox_detail::kBump1;
    }
    const __m512i key0 = _mm512_set1_epi32(static_cast<int>(k0));
    const __m512i key1 = _mm512_set1_epi32(static_cast<int>(k1));
    for (int v = 0; v < kVectors; ++v) {  // philox_detail::round
      const __m512i p0 = _mm512_mul_epu32(c0[v], mul0), p1 = _mm512_mul_epu32(c2[v], mul1);
      c0[v] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p1, 32), c1[v], key0, kXor3);
      c2[v] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p0, 32), c3[v], key1, kXor3);
      c1[v] = p1;
      c3[v] = p0;
    }
  }
  for (int g = 0; g < kVectors / 2; ++g) {
    _mm512_storeu_si512(w0 + 16 * g, merge_avx512(c0[2 * g], c0[2 * g + 1]));
    _mm512_storeu_si512(w1 + 16 * g, merge_avx512(c1[2 * g], c1[2 * g + 1]));
    _mm512_storeu_si512(w2 + 16 * g, merge_avx512(c2[2 * g], c2[2 * g + 1]));
    _mm512_storeu_si512(w3 + 16 * g, merge_avx512(c3[2 * g], c3[2 * g + 1]));
  }
}

// The x86-64-v3 (AVX2) clone's group: blocks block_lo .. block_lo + 15, as above with 4 blocks
// per vector and two XORs for each three-way one.
SHARPZO_AVX2_INLINE void philox_group_avx2(StreamKey key, uint32_t block_lo, uint32_t block_hi,
                                           uint32_t* __restrict w0, uint32_t* __restrict w1,
                                           uint32_t* __restrict w2, uint32_t* __restrict w3) {
  constexpr int kVectors = 4;
  __m256i c0[kVectors], c1[kVectors], c2[kVectors], c3[kVectors];
  const __m256i steps = _mm256_setr_epi64x(0, 2, 4, 6);
  for (int v = 0; v < kVectors; ++v) {  // vector v: blocks block_lo + 8 (v / 2) + v % 2 + 2 i
    c0[v] = _mm256_add_epi64(_mm256_set1_epi64x(block_lo + 8u * (v / 2) + v % 2), steps);
    c1[v] = _mm256_set1_epi32(static_cast<int>(block_hi));
    c2[v] = _mm256_set1_epi32(static_cast<int>(key.stream_lo));
    c3[v] = _mm256_set1_epi32(static_cast<int>(key.stream_hi));
  }
  const __m256i mul0 = _mm256_set1_epi64x(philox_detail::kMul0);
  const __m256i mul1 = _mm256_set1_epi64x(philox_detail::kMul1);
  uint32_t k0 = key.seed_lo, k1 = key.seed_hi;
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += philox_detail::kBump0;
      k1 += philox_detail::kBump1;
    }
    const __m256i key0 = _mm256_set1_epi32(static_cast<int>(k0));
    const __m256i key1 = _mm256_set1_epi32(static_cast<int>(k1));
    for (int v = 0; v < kVectors; ++v) {
      const __m256i p0 = _mm256_mul_epu32(c0[v], mul0), p1 = _mm256_mul_epu32(c2[v], mul1);
      c0[v] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c1[v]), key0);
      c2[v] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c3[v]), key1);
      c1[v] = p1;
      c3[v] = p0;
    }
  }
  for (int g = 0; g < kVectors / 2; ++g) {
    const auto to = [g](uint32_t* w) { return reinterpret_cast<__m256i*>(w + 8 * g); };
    _mm256_storeu_si256(to(w0), merge_avx2(c0[2 * g], c0[2 * g + 1]));
    _mm256_storeu_si256(to(w1), merge_avx2(c1[2 * g], c1[2 * g + 1]));
    _mm256_storeu_si256(to(w2), merge_avx2(c2[2 * g], c2[2 * g + 1]));
    _mm256_storeu_si256(to(w3), merge_avx2(c3[2 * g], c3[2 * g + 1]));
  }
}

// Blocks first_block .. first_block + count - 1 (count a multiple of 32, no carry out of the
// low counter word), their words k stored to wk[0..count - 1].
SHARPZO_AVX512_INLINE void philox_blocks_avx512(StreamKey key, uint64_t first_block,
                                                uint32_t count, uint32_t* w0, uint32_t* w1,
                                                uint32_t* w2, uint32_t* w3) {
  const uint32_t lo = static_cast<uint32_t>(first_block);
  const uint32_t hi = static_cast<uint32_t>(first_block >> 32);
  for (uint32_t b = 0; b < count; b += 32) {
    philox_group_avx512(key, lo + b, hi, w0 + b, w1 + b, w2 + b, w3 + b);
  }
}

// The same for count a multiple of 16.
SHARPZO_AVX2_INLINE void philox_blocks_avx2(StreamKey key, uint64_t first_block, uint32_t count,
                                            uint32_t* w0, uint32_t* w1, uint32_t* w2,
                                            uint32_t* w3) {
  const uint32_t lo = static_cast<uint32_t>(first_block);
  const uint32_t hi = static_cast<uint32_t>(first_block >> 32);
  for (uint32_t b = 0; b < count; b += 16) {
    philox_group_avx2(key, lo + b, hi, w0 + b, w1 + b, w2 + b, w3 + b);
  }
}

}  // namespace sharpzo
