// Every op schema of the sharpzo library, in one place. Kernels: cpu/*.cpp, cuda/*.cu;
// typed Python wrappers and fake (meta) registrations: sharpzo_ext/ops.py.
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
}
