"""Build the optional native extension ``effrank_fast._C``.

Build configuration (environment variables):

- ``EFFRANK_FAST_SKIP_BUILD=1``        pure-Python install, no ``_C`` at all.
- ``EFFRANK_FAST_SKIP_CUDA_BUILD=1``   build only the C++ CPU kernels.
- ``FORCE_CUDA=1``                     build the CUDA kernels even without a visible GPU
                                       (needs a CUDA build of torch and ``CUDA_HOME``).
- ``TORCH_CUDA_ARCH_LIST``             honoured by torch's cpp_extension; defaults to ``9.0a``.
- ``DEBUG=1``                          ``-O0 -g`` (and ``-G`` for nvcc).

Every skipped part prints why. Build with ``pip install --no-build-isolation -e .`` so the
extension compiles against the torch that is already installed.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _say(msg: str) -> None:
    print(f"[effrank_fast setup] {msg}", file=sys.stderr)


def _cuda_skip_reason(torch) -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME

    if _flag("EFFRANK_FAST_SKIP_CUDA_BUILD"):
        return "EFFRANK_FAST_SKIP_CUDA_BUILD=1"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if CUDA_HOME is None:
        return "CUDA_HOME is not set and nvcc was not found"
    if not (torch.cuda.is_available() or _flag("FORCE_CUDA")):
        return "no CUDA device is visible (set FORCE_CUDA=1 to build anyway)"
    return None


def get_extensions() -> list:
    if _flag("EFFRANK_FAST_SKIP_BUILD"):
        _say("EFFRANK_FAST_SKIP_BUILD=1: skipping the native extension; pure-PyTorch backends only.")
        return []
    try:
        import torch
        from torch.utils.cpp_extension import CppExtension, CUDAExtension
    except ImportError as exc:
        _say(f"torch is not importable ({exc}); skipping the native extension.")
        return []

    debug = _flag("DEBUG")
    cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
    cxx_flags += ["-std=c++17", "-fopenmp"]
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))

    reason = _cuda_skip_reason(torch)
    if reason is None and cuda_sources:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
        nvcc_flags = ["-O0", "-G", "-g"] if debug else ["-O3", "-lineinfo"]
        nvcc_flags += ["-std=c++17", "--expt-relaxed-constexpr"]
        _say(
            f"building C++ and CUDA kernels ({len(cuda_sources)} .cu files) for "
            f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}"
        )
        _write_build_config(os.environ["TORCH_CUDA_ARCH_LIST"])
        ext = CUDAExtension(
            "effrank_fast._C",
            cpp_sources + cuda_sources,
            extra_compile_args={"cxx": cxx_flags + ["-DEFFRANK_FAST_WITH_CUDA"], "nvcc": nvcc_flags},
            extra_link_args=["-fopenmp", "-lcusolver", "-lcublas"],
            include_dirs=[os.path.join(ROOT, "csrc")],
        )
    else:
        if cuda_sources:
            _say(f"skipping the CUDA kernels: {reason}. Building the C++ CPU kernels only.")
        _write_build_config(None)
        ext = CppExtension(
            "effrank_fast._C",
            cpp_sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
            include_dirs=[os.path.join(ROOT, "csrc")],
        )
    return [ext]


def _write_build_config(cuda_arch_list: str | None) -> None:
    """Record what the CUDA kernels were built for, so that a GPU they cannot run on is refused
    with a reason instead of a "no kernel image" error (effrank_fast/_native.py)."""
    path = os.path.join(ROOT, "effrank_fast", "_build_config.py")
    with open(path, "w") as f:
        f.write(f'"""Written by setup.py at build time (not tracked)."""\n\nCUDA_ARCH_LIST = {cuda_arch_list!r}\n')


def get_cmdclass() -> dict:
    try:
        from torch.utils.cpp_extension import BuildExtension
    except ImportError:
        return {}
    return {"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)}


setup(ext_modules=get_extensions(), cmdclass=get_cmdclass())
