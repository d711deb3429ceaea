// effrank_fast._C: the native kernels of the effrank_fast op library.
//
// The schemas live in Python, effrank_fast/ops/<op>/schema.py (effrank_fast/ops/registry.py lists
// every op). This file only makes `import effrank_fast._C` load the shared library; the kernels
// register themselves with TORCH_LIBRARY_IMPL(effrank_fast, <device>, m) in csrc/<op>/:
// gram_native, gram_check (CPU; csrc/gram/), inertia, tridiag_top (CPU, CUDA; csrc/inertia/) and
// jacobi_eigh (CPU, CUDA; csrc/jacobi_eigh/) and spectrum_scalars (CPU; csrc/spectrum_scalars/).
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
