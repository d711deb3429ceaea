// effrank_fast._C: native kernels for the ops whose schemas live in effrank_fast/ops/registry.py.
//
// This file only makes `import effrank_fast._C` load the shared library; the kernels register
// themselves with TORCH_LIBRARY_IMPL(effrank_fast, <device>, m) in csrc/<op>/.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
