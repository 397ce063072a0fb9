// CPU kernels of sparse_zscore and sparse_zscore_ (schemas: csrc/ops.cpp, reference:
// sharpzo_ext/ops/reference.py).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/moments.h"
#include "sharpzo/acc_type.h"
#include "sharpzo/order_key.h"
#include "sparse_zscore.h"

namespace sharpzo {
namespace {

// Note [Radix selection on the CPU]
// The k-th largest key is found digit by digit from the top, 11 bits at a time: a histogram of
// the current digit over the keys that match the digits found so far tells which digit the k-th
// largest has. Keys are recomputed from the scores on every pass rather than stored, so the op
// allocates nothing but its outputs; each pass reads the scores once (3 passes for 32-bit keys,
// 6 for 64-bit ones). A pass counts into four interleaved uint32 histograms per thread (32 KiB,
// in L1), which breaks the store-to-load chains of repeated bins (3.5x faster than one histogram
// on this machine), and adds the match test instead of branching on it. Then one pass writes the
// mask (keys above the threshold) and counts the keys equal to it per chunk, and a fix-up over
// the chunks that hold such ties keeps the first `ties` of them in index order (Note [Score
// order]); ties are rare for real-valued scores, so the fix-up costs little.
constexpr int kDigitBits = 11;
constexpr int kBins = 1 << kDigitBits;
constexpr int kCopies = 4;
constexpr int64_t kGrain = 1 << 15;
constexpr int64_t kPiece = int64_t{1} << 30;  // elements per uint32 histogram flush

template <typename Key>
struct Threshold {
  Key key;       // the k-th largest key
  int64_t ties;  // how many keys equal to `key` are selected (the lowest-index ones)
};

constexpr int64_t kBatch = 256;  // keys computed (vectorized) before they are counted

// Adds to `total` the histogram of digit (key >> lo) & digit_mask over keys i in [begin, end)
// that match `prefix` under `prefix_mask`.
template <typename Key, typename KeyOf>
SHARPZO_CPU_CLONES void count_digits(KeyOf key_of, int64_t begin, int64_t end, Key prefix,
                                     Key prefix_mask, int lo, Key digit_mask, int64_t* total) {
  uint32_t h[kCopies][kBins];
  Key keys[kBatch];
  for (int64_t piece = begin; piece < end; piece += kPiece) {
    const int64_t piece_end = std::min(end, piece + kPiece);
    std::memset(h, 0, sizeof(h));
    for (int64_t batch = piece; batch < piece_end; batch += kBatch) {
      const int64_t count = std::min(kBatch, piece_end - batch);
      for (int64_t j = 0; j < count; ++j) keys[j] = key_of(batch + j);
      int64_t j = 0;
      for (; j + kCopies <= count; j += kCopies) {
        for (int c = 0; c < kCopies; ++c) {  // unrolled: one histogram per copy
          const Key key = keys[j + c];
          h[c][(key >> lo) & digit_mask] += (key & prefix_mask) == prefix;
        }
      }
      for (; j < count; ++j) h[0][(keys[j] >> lo) & digit_mask] += (keys[j] & prefix_mask) == prefix;
    }
    for (int b = 0; b < kBins; ++b) {
      for (int c = 0; c < kCopies; ++c) total[b] += h[c][b];
    }
  }
}

template <typename Key, typename KeyOf>
Threshold<Key> radix_select(KeyOf key_of, int64_t n, int64_t k) {
  constexpr int kKeyBits = 8 * sizeof(Key);
  Key prefix = 0, prefix_mask = 0;
  int64_t remaining = k;  // rank of the wanted key among those matching the prefix
  std::vector<std::array<int64_t, kBins>> histograms(static_cast<size_t>(at::get_num_threads()));
  for (int hi = kKeyBits; hi > 0; hi -= kDigitBits) {
    const int lo = std::max(0, hi - kDigitBits);
    const Key digit_mask = static_cast<Key>((Key{1} << (hi - lo)) - 1);
    for (auto& h : histograms) h.fill(0);
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      count_digits(key_of, begin, end, prefix, prefix_mask, lo, digit_mask,
                   histograms[static_cast<size_t>(at::get_thread_num())].data());
    });
    int64_t digit = static_cast<int64_t>(digit_mask);
    for (;; --digit) {
      int64_t count = 0;
      for (const auto& h : histograms) count += h[static_cast<size_t>(digit)];
      if (count >= remaining) break;
      remaining -= count;
    }
    prefix |= static_cast<Key>(digit) << lo;
    prefix_mask |= digit_mask << lo;
  }
  return Threshold<Key>{prefix, remaining};
}

// Marks keys above the threshold in a chunk, zeroes values at keys below it; returns how many
// keys equal the threshold (decided afterwards, in index order).
template <typename Key, typename KeyOf, typename value_t>
SHARPZO_CPU_CLONES int64_t mark_above(KeyOf key_of, Key threshold, int64_t begin, int64_t end,
                                      bool* __restrict mask, value_t* __restrict values) {
  Key keys[kBatch];
  int64_t equal = 0;
  for (int64_t batch = begin; batch < end; batch += kBatch) {
    const int64_t count = std::min(kBatch, end - batch);
    for (int64_t j = 0; j < count; ++j) keys[j] = key_of(batch + j);
    for (int64_t j = 0; j < count; ++j) {
      const bool above = keys[j] > threshold, tie = keys[j] == threshold;
      mask[batch + j] = above;
      const value_t v = values[batch + j];
      values[batch + j] = above || tie ? v : value_t(0);
      equal += tie;
    }
  }
  return equal;
}

// mask[i] = key(i) > threshold, or key(i) == threshold among the first `ties` such i; values
// outside the mask are zeroed.
template <typename Key, typename KeyOf, typename value_t>
void write_mask(KeyOf key_of, Threshold<Key> threshold, int64_t n, bool* mask, value_t* values) {
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  std::vector<int64_t> equal(static_cast<size_t>(chunks), 0);
  at::parallel_for(0, chunks, 4, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      equal[static_cast<size_t>(c)] = mark_above(key_of, threshold.key, c * kChunkElements,
                                                 std::min(n, (c + 1) * kChunkElements), mask, values);
    }
  });
  std::vector<int64_t> ties_before(equal.size());  // exclusive prefix sum, in chunk order
  int64_t running = 0;
  for (size_t c = 0; c < equal.size(); ++c) ties_before[c] = std::exchange(running, running + equal[c]);
  at::parallel_for(0, chunks, 4, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      if (equal[static_cast<size_t>(c)] == 0) continue;
      int64_t rank = ties_before[static_cast<size_t>(c)];
      for (int64_t i = c * kChunkElements, e = std::min(n, i + kChunkElements); i < e; ++i) {
        if (key_of(i) != threshold.key) continue;
        const bool take = rank++ < threshold.ties;
        mask[i] = take;
        if (!take) values[i] = value_t(0);
      }
    }
  });
}

template <typename Key, typename KeyOf, typename value_t>
void select_top_k(KeyOf key_of, int64_t n, int64_t k, bool* mask, value_t* values) {
  write_mask<Key>(key_of, radix_select<Key>(key_of, n, k), n, mask, values);
}

template <typename T>
using key_type = std::conditional_t<std::is_same_v<T, double>, uint64_t, uint32_t>;

template <typename value_t>
SHARPZO_CPU_CLONES void zscore_range(const value_t* __restrict g, value_t* __restrict values,
                                     Moments m, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    values[i] = static_cast<value_t>(zscore(static_cast<double>(g[i]), m));
  }
}

template <typename value_t>
void sparse_zscore_typed(const SparseZScoreJob& job) {
  const int64_t n = job.g.numel();
  const value_t* g = job.g.const_data_ptr<value_t>();
  value_t* values = job.values.mutable_data_ptr<value_t>();
  bool* mask = job.mask.mutable_data_ptr<bool>();
  const Moments m = moments_cpu([g](int64_t i) { return static_cast<double>(g[i]); }, n, job.eps);
  check_finite_data(job.op, job.check_finite, m.finite, "g", job.g);
  if (job.check_finite && job.score.defined()) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.score.scalar_type(), "score", [&] {
      const scalar_t* score = job.score.const_data_ptr<scalar_t>();
      const auto value = [score](int64_t i) { return static_cast<double>(score[i]); };
      check_finite_data(job.op, true, all_finite_cpu(value, n), "score",
                        job.score);
    });
  }
  if (!m.finite) {
    std::fill(values, values + n, std::numeric_limits<value_t>::quiet_NaN());
    std::fill(mask, mask + n, false);
    return;
  }
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    zscore_range(g, values, m, begin, end);
  });
  if (!job.score.defined()) {  // score = |values| as stored
    const auto key_of = [values](int64_t i) {
      return magnitude_key(static_cast<acc_type<value_t>>(values[i]));
    };
    select_top_k<key_type<value_t>>(key_of, n, job.k, mask, values);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.score.scalar_type(), "score", [&] {
    const scalar_t* score = job.score.const_data_ptr<scalar_t>();
    const auto key_of = [score](int64_t i) {
      return order_key(static_cast<acc_type<scalar_t>>(score[i]));
    };
    select_top_k<key_type<scalar_t>>(key_of, n, job.k, mask, values);
  });
}

void launch_cpu(const SparseZScoreJob& job) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.g.scalar_type(),
                                  "sparse_zscore_cpu", [&] { sparse_zscore_typed<scalar_t>(job); });
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CPU, m) {
  m.impl("sparse_zscore", &sparse_zscore_kernel<launch_cpu>);
  m.impl("sparse_zscore_", &sparse_zscore_inplace_kernel<launch_cpu>);
}

}  // namespace sharpzo
