// An empty Python module, so that `import sharpzo_ext._C` loads this library and runs its
// TORCH_LIBRARY registrations. The ops are reached through torch.ops.sharpzo (sharpzo_ext/ops/);
// nothing is bound with pybind11, which keeps the module ABI-stable across Python versions.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
