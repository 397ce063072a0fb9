// Portability macros for code shared by host (C++) and device (CUDA) compilers.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SHARPZO_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SHARPZO_HOST_DEVICE inline __attribute__((always_inline))
#endif

// Note [CPU ISA dispatch]
// The CPU kernels are plain loops written so that the compiler vectorizes them (no branches,
// no libm calls, fixed trip counts). SHARPZO_CPU_CLONES compiles such a loop for AVX-512,
// AVX2+FMA and the baseline ISA, and the dynamic loader picks the best one for the machine
// (GCC target_clones, an ifunc). Every call on one machine runs the same clone, so results do
// not depend on thread count or chunking; across ISAs float results may differ by FMA
// contraction (within the stream contract's tolerance), integer-derived ones (Rademacher) never.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define SHARPZO_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SHARPZO_CPU_CLONES
#endif
