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
// (GCC target_clones, an ifunc). Every clone computes the same bits: see Note [Same bits
// everywhere]. Where the compiler cannot be brought to emit the right instructions (Note [Philox
// on x86 vector units]), the x86 clones are written by hand and become versions of one function
// (GCC function multiversioning, the same load-time choice). sharpzo::cpu_kernel_isa reports
// the choice. A library built with SHARPZO_CPU_NO_AVX512 defined has no AVX-512 clones: on an
// AVX-512 machine it runs the AVX2 code, which is how AVX2-only machines are measured (`make
// bench-avx2`).
//
// Note [Same bits everywhere]
// All floating-point code of the kernels is compiled without FMA contraction (-ffp-contract=off
// for C++, -fmad=false for nvcc) and uses only correctly rounded IEEE operations (+, -, *, /,
// sqrt; no libm). An element's value is therefore the same on every ISA clone, thread count,
// launch geometry, and on CPU and CUDA: not only Rademacher values but Gaussians and reductions
// too. Workers of a distributed run on different machines regenerate identical directions from a
// shared seed, and a mask chosen on one device equals the mask chosen on another. The price is
// about 20% of the CPU Gaussian's speed (the polynomials lose their fused multiply-adds).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define SHARPZO_X86_CLONES 1
#endif

#if defined(SHARPZO_X86_CLONES) && defined(SHARPZO_CPU_NO_AVX512)
#define SHARPZO_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(SHARPZO_X86_CLONES)
#define SHARPZO_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SHARPZO_CPU_CLONES
#endif

// Host-only code that a cloned loop calls: inlined into each clone, it is compiled for that
// clone's ISA (sharpzo/cpu_tiles.h).
#define SHARPZO_INLINE inline __attribute__((always_inline))
