// Every op schema of the sharpzo library, in one place. Kernels: cpu/*.cpp, cuda/*.cu; typed
// Python wrappers: sharpzo_ext/ops/__init__.py; fake (meta) kernels: sharpzo_ext/ops/fakes.py.
#include <torch/library.h>

TORCH_LIBRARY(sharpzo, m) {
  // x += scale * z(seed, stream, offset + i) for every element i of x (row-major logical order),
  // or only where mask is True. dist: "gaussian" or "rademacher". Returns nothing: the Python
  // wrapper returns x, which keeps the op functionalizable.
  m.def(
      "perturb_(Tensor(a!) x, int seed, int stream, float scale, str dist, int offset, "
      "Tensor? mask) -> ()");
  // out = z(seed, stream, offset + i).
  m.def("sample_(Tensor(a!) out, int seed, int stream, str dist, int offset) -> ()");

  // Mean and population std over all of g (Note [Deterministic reductions]); values = (g - mean)
  // / (std + eps) on the k entries of largest score (default |values|), 0 elsewhere, and the bool
  // mask of those entries; ties go to the lower index (Note [Score order]). Non-finite g or score:
  // an error if check_finite, else values all NaN and mask all False (NaN scores rank lowest).
  m.def(
      "sparse_zscore(Tensor g, int k, Tensor? score, float eps, bool check_finite) -> "
      "(Tensor values, Tensor mask)");
  // The same, writing values into g (untouched on error); returns the mask.
  m.def(
      "sparse_zscore_(Tensor(a!) g, int k, Tensor? score, float eps, bool check_finite) -> "
      "Tensor mask");
  // w^2 * (|grad| - mean|grad|) / (std|grad| + eps): the score SparseZO picks coordinates by.
  m.def("mask_score(Tensor w, Tensor grad, float eps, bool check_finite) -> Tensor");

  // In place: C = decay * C + c1 * pc pc^T + cmu * sum_i weights[i] * Y[i] Y[i]^T, reading C's
  // upper triangle and writing an exactly symmetric result (Note [Symmetric covariance update]).
  m.def(
      "cma_cov_update_(Tensor(a!) C, Tensor pc, Tensor Y, Tensor weights, float c1, float cmu, "
      "float decay) -> ()");

  // Row-wise symmetric int8 quantization of a 2-D float32 x: scale = max|x| / qmax per row (1
  // where that is 0, NaN for a row with a non-finite entry), q = round_half_even(x / scale) + 128
  // as uint8 (128 in a non-finite row): oneDNN's u8 form with zero point 128. qmax in [1, 127]
  // (Note [quantize_rows arithmetic] in sharpzo/quantize.h; Notes [Row-wise int8] and [int8
  // without VNNI] in sharpzo_ext/clip/engine/precision.py).
  m.def("quantize_rows(Tensor x, int qmax=127) -> (Tensor q, Tensor scale)");

  // The clone of the CPU kernels this library runs on this machine: "x86-64-v4" (AVX-512),
  // "x86-64-v3" (AVX2 + FMA), "x86-64" (baseline), "aarch64" or "portable".
  m.def("cpu_kernel_isa() -> str");
}
