// A minimal check harness for the C++ tests (no test framework is needed for header-only code).
#pragma once

#include <cstdio>

namespace sharpzo_test {
inline int& failures() {
  static int count = 0;
  return count;
}
}  // namespace sharpzo_test

#define EXPECT(cond, ...)                                                   \
  do {                                                                      \
    if (!(cond)) {                                                          \
      ++sharpzo_test::failures();                                           \
      std::fprintf(stderr, "%s:%d: EXPECT(%s) failed: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                    \
      std::fprintf(stderr, "\n");                                           \
    }                                                                       \
  } while (0)

#define TEST_MAIN_RESULT(name)                                              \
  (std::printf("%s: %s (%d failures)\n", name,                              \
               sharpzo_test::failures() ? "FAILED" : "passed", sharpzo_test::failures()), \
   sharpzo_test::failures() ? 1 : 0)
