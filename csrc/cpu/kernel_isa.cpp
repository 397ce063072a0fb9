// cpu_kernel_isa (schema: csrc/ops.cpp): which of the CPU kernels' clones this library runs on this
// machine (Note [CPU ISA dispatch]), for benchmark records and reports.
#include <torch/library.h>

#include <string>

#include "sharpzo/macros.h"

namespace sharpzo {
namespace {

// The same choice as the clones' load-time resolvers: the best level the CPU supports and the
// library has code for.
std::string cpu_kernel_isa() {
#if defined(SHARPZO_X86_CLONES)
  __builtin_cpu_init();
#if !defined(SHARPZO_CPU_NO_AVX512)
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
#endif
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
  return "x86-64";
#elif defined(__aarch64__)
  return "aarch64";
#else
  return "portable";
#endif
}

}  // namespace

TORCH_LIBRARY_IMPL(sharpzo, CompositeExplicitAutograd, m) {
  m.impl("cpu_kernel_isa", &cpu_kernel_isa);
}

}  // namespace sharpzo
