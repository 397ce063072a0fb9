#include "perturb.h"

#include "checks.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace sharpzo {

namespace {

void check_stream_int(const char* op, int64_t value, const char* name) {
  TORCH_CHECK_VALUE(value >= 0, op, ": ", name, " must be in [0, 2^63), got ", value);
}

Distribution parse_dist(const char* op, c10::string_view dist) {
  if (dist == "gaussian") return Distribution::kGaussian;
  if (dist == "rademacher") return Distribution::kRademacher;
  TORCH_CHECK_VALUE(false, op, ": dist must be \"gaussian\" or \"rademacher\", got \"", dist, "\"");
}

void check_mask(const char* op, const at::Tensor& x, const at::Tensor& mask) {
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kBool, op, ": mask must be a bool tensor, got ",
                   mask.scalar_type());
  check_like(op, x, "x", mask, "mask");
  check_no_overlap(op, x, "x", mask, "mask");
}

PerturbJob make_job(const char* op, int64_t seed, int64_t stream, c10::string_view dist,
                    int64_t offset) {
  check_stream_int(op, seed, "seed");
  check_stream_int(op, stream, "stream");
  check_stream_int(op, offset, "offset");
  PerturbJob job;
  job.dist = parse_dist(op, dist);
  job.key = make_stream_key(static_cast<uint64_t>(seed), static_cast<uint64_t>(stream));
  job.offset = static_cast<uint64_t>(offset);
  return job;
}

// Note [Non-contiguous tensors]
// The kernels walk memory linearly, element i of the tensor taking stream index offset + i in
// row-major logical order. A non-contiguous tensor is run through a contiguous copy that is
// written back, so its values are exactly those of x.contiguous() (one temporary; contiguous
// tensors, the case that matters for parameters, are never copied).
void launch_on_contiguous(at::Tensor& x, PerturbJob& job, PerturbLauncher launch) {
  if (x.numel() == 0) return;
  job.x = x.contiguous();
  launch(job);
  if (!x.is_same(job.x)) x.copy_(job.x);
}

}  // namespace

void perturb_with(at::Tensor& x, int64_t seed, int64_t stream, double scale, c10::string_view dist,
                  int64_t offset, const std::optional<at::Tensor>& mask, PerturbLauncher launch) {
  constexpr const char* op = "perturb_";
  PerturbJob job = make_job(op, seed, stream, dist, offset);
  check_floating(op, x, "x");
  TORCH_CHECK_VALUE(std::isfinite(scale), op, ": scale must be finite, got ", scale);
  job.scale = scale;
  at::Tensor mask_contiguous;
  if (mask.has_value()) {
    check_mask(op, x, *mask);
    mask_contiguous = mask->contiguous();
    // Read as bytes: compilers vectorize selects on uint8_t, not on bool.
    job.mask = reinterpret_cast<const uint8_t*>(mask_contiguous.const_data_ptr<bool>());
  }
  launch_on_contiguous(x, job, launch);
}

void sample_with(at::Tensor& out, int64_t seed, int64_t stream, c10::string_view dist,
                 int64_t offset, PerturbLauncher launch) {
  constexpr const char* op = "sample_";
  PerturbJob job = make_job(op, seed, stream, dist, offset);
  check_floating(op, out, "out");
  job.add = false;
  launch_on_contiguous(out, job, launch);
}

}  // namespace sharpzo
