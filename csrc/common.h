#pragma once
// Argument checks shared by the CPU and CUDA kernels. Messages name the argument, like the
// Python-side validation, because these are reachable through torch.ops directly.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#define EFF_CHECK_2D(x, name) \
  TORCH_CHECK((x).dim() == 2, name " must be a 2-D tensor, got ", (x).dim(), " dimensions")
#define EFF_CHECK_SQUARE(x, name) \
  TORCH_CHECK((x).dim() == 2 && (x).size(0) == (x).size(1), name " must be square [d, d], got ", (x).sizes())
#define EFF_CHECK_FLOAT(x, name) \
  TORCH_CHECK(at::isFloatingType((x).scalar_type()), name " must be floating point, got ", (x).scalar_type())
#define EFF_CHECK_SAME_DEVICE(x, y, nx, ny) \
  TORCH_CHECK((x).device() == (y).device(), nx " and " ny " must be on the same device")
