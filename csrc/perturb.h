// Host-side code shared by the CPU and CUDA kernels of perturb_ and sample_: argument checks,
// the handling of non-contiguous tensors, and the job handed to a device's launcher.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "sharpzo/stream.h"

namespace sharpzo {

// One application of the stream to a contiguous tensor:
//   add:   x[i] = x[i] + scale * z(offset + i)   (only where mask[i], if mask is given)
//   store: x[i] = z(offset + i)
// Arithmetic is in float32 (float64 for float64 tensors), rounded once on store.
struct PerturbJob {
  at::Tensor x;                  // contiguous
  const uint8_t* mask = nullptr;  // the bool mask's bytes (0 or 1), contiguous, or null
  StreamKey key{};
  Distribution dist = Distribution::kGaussian;
  uint64_t offset = 0;           // stream index of x's element 0
  double scale = 1.0;
  bool add = true;
};

using PerturbLauncher = void (*)(const PerturbJob& job);

// perturb_ and sample_ for any device: validate the arguments (errors name them), then run
// `launch` on x, or on a contiguous copy of x that is written back.
void perturb_with(at::Tensor& x, int64_t seed, int64_t stream, double scale, c10::string_view dist,
                  int64_t offset, const std::optional<at::Tensor>& mask, PerturbLauncher launch);
void sample_with(at::Tensor& out, int64_t seed, int64_t stream, c10::string_view dist,
                 int64_t offset, PerturbLauncher launch);

// The kernels a device registers: m.impl("perturb_", &perturb_kernel<launch_on_my_device>).
template <PerturbLauncher launch>
void perturb_kernel(at::Tensor& x, int64_t seed, int64_t stream, double scale,
                    c10::string_view dist, int64_t offset, const std::optional<at::Tensor>& mask) {
  perturb_with(x, seed, stream, scale, dist, offset, mask, launch);
}

template <PerturbLauncher launch>
void sample_kernel(at::Tensor& out, int64_t seed, int64_t stream, c10::string_view dist,
                   int64_t offset) {
  sample_with(out, seed, stream, dist, offset, launch);
}

}  // namespace sharpzo
