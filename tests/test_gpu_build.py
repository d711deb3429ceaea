"""The native build: on a GPU machine every CUDA kernel must be registered (a failed or partial
build fails here instead of skipping the CUDA tests); everywhere, setup.py's search for the CUDA
toolkit, the math headers and the versioned libraries, on fake folder layouts."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest
import torch

from effrank_fast.ops import native

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA_OPS = ("inertia", "tridiag_top", "jacobi_eigh")  # every TORCH_LIBRARY_IMPL(effrank_fast, CUDA, m)


def _setup_module():
    spec = importlib.util.spec_from_file_location("effrank_fast_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself runs only as __main__
    return module


def _touch(path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def test_every_cuda_kernel_is_listed():
    registered = set()
    for cu in (ROOT / "csrc").rglob("*.cu"):
        for line in cu.read_text().splitlines():
            if "TORCH_LIBRARY_IMPL(effrank_fast, CUDA" in line:
                registered.update(part.split('"')[1] for part in line.split("m.impl(")[1:])
    assert registered == set(CUDA_OPS)


@pytest.mark.gpu
@pytest.mark.parametrize("op", CUDA_OPS)
def test_cuda_kernel_is_registered(op):
    assert native.HAS_NATIVE, f"effrank_fast._C did not load: {native.NATIVE_ERROR}"
    assert native.has_kernel(op, "cuda"), (
        f"effrank_fast::{op} has no CUDA kernel: the extension was built without CUDA "
        "(see the build log's '[effrank_fast setup]' lines)"
    )
    assert native.kernel_missing_reason(op, torch.device("cuda")) is None


def test_cuda_home_rejects_a_wrapper_prefix(tmp_path, monkeypatch):
    """`which nvcc` = /usr/local/bin/nvcc (a wrapper) makes torch guess CUDA_HOME=/usr/local."""
    setup = _setup_module()
    wrapper_prefix = tmp_path / "usr_local"
    _touch(wrapper_prefix / "bin" / "nvcc")
    toolkit = tmp_path / "cuda"
    _touch(toolkit / "bin" / "nvcc")
    _touch(toolkit / "targets" / "x86_64-linux" / "include" / "cuda_runtime.h")
    monkeypatch.setenv("CUDA_HOME", str(wrapper_prefix))  # lacks include/cuda_runtime.h: rejected
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    assert setup.find_cuda_home(str(wrapper_prefix), "13.0") == str(toolkit)
    monkeypatch.delenv("CUDA_PATH")
    if not os.path.isfile("/usr/local/cuda/include/cuda_runtime.h"):  # else the default is found
        with pytest.raises(setup.CudaUnusable, match="lacks include/cuda_runtime.h"):
            setup.find_cuda_home(str(wrapper_prefix), "99.0")


def test_math_headers_and_versioned_libraries_come_from_the_wheels(tmp_path):
    """CUDA 13 wheels: headers in nvidia/cu13/include, only libcublas.so.13 (no libcublas.so)."""
    setup = _setup_module()
    toolkit = tmp_path / "cuda"
    _touch(toolkit / "bin" / "nvcc")
    _touch(toolkit / "include" / "cuda_runtime.h")
    _touch(toolkit / "lib64" / "libcudart.so.13")
    wheels = tmp_path / "site-packages" / "nvidia"
    for header in ("cublas_v2.h", "cublas_api.h", "cublasLt.h", "cusparse.h", "cusolverDn.h", "cusolver_common.h"):
        _touch(wheels / "cu13" / "include" / header)
    _touch(wheels / "cu13" / "include" / "cuda_runtime.h")  # the wheel's own: must not shadow the toolkit's
    cublas = _touch(wheels / "cu13" / "lib" / "libcublas.so.13")
    farm = setup.math_header_dirs(str(toolkit), [str(wheels)], "13", str(tmp_path / "build"))
    assert len(farm) == 1
    linked = sorted(p.name for p in pathlib.Path(farm[0]).iterdir())
    assert "cuda_runtime.h" not in linked and {"cublas_v2.h", "cusparse.h", "cusolverDn.h"} <= set(linked)
    assert setup.find_library("cublas", str(toolkit), [str(wheels)], "13") == str(cublas)
    assert setup.find_library("cudart", str(toolkit), [str(wheels)], "13") == str(toolkit / "lib64" / "libcudart.so.13")
    with pytest.raises(setup.CudaUnusable, match="libcusolver.so.13 not found"):
        setup.find_library("cusolver", str(toolkit), [str(wheels)], "13")
    (wheels / "cu13" / "include" / "cusparse.h").unlink()
    with pytest.raises(setup.CudaUnusable, match="cusparse.h not found"):
        setup.math_header_dirs(str(toolkit), [str(wheels)], "13", str(tmp_path / "build2"))
