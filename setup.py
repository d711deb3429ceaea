"""Build the optional native extension ``effrank_fast._C``.

Build configuration (environment variables, ENVs.md):

- ``EFFRANK_FAST_SKIP_BUILD=1``        pure-Python install, no ``_C`` at all.
- ``EFFRANK_FAST_SKIP_CUDA_BUILD=1``   build only the C++ CPU kernels.
- ``EFFRANK_FAST_REQUIRE_CUDA=1``      fail instead of skipping the CUDA kernels (GPU runs).
- ``FORCE_CUDA=1``                     build the CUDA kernels even without a visible GPU
                                       (needs a CUDA build of torch and a CUDA toolkit's nvcc).
- ``CUDA_HOME``                        the toolkit; checked (include/cuda_runtime.h, bin/nvcc),
                                       else /usr/local/cuda, else /usr/local/cuda-<torch's CUDA>.
- ``EFFRANK_FAST_CXX_STD``             C++ standard; default: the one the installed torch uses.
- ``TORCH_CUDA_ARCH_LIST``             honoured by torch's cpp_extension; defaults to ``9.0a``.
- ``DEBUG=1``                          ``-O0 -g`` (and ``-G`` for nvcc).

The CUDA kernels need cuBLAS (the only CUDA library they call) and, through
``ATen/cuda/CUDAContext.h``, the cuBLAS, cuBLASLt, cuSPARSE and cuSOLVER headers. Both are looked up
in CUDA_HOME first, else in the nvidia pip wheels torch depends on (CUDA 13: headers in
``site-packages/nvidia/cu13/include``, only versioned libraries such as ``libcublas.so.13``, linked by
full path). Every skipped part prints why. Build with ``pip install --no-build-isolation -e .`` so the
extension compiles against the torch that is already installed.
"""

from __future__ import annotations

import glob
import inspect
import os
import re
import shutil
import site
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# Headers CUDAContext.h pulls in beyond the toolkit's own (cudart, cuComplex, library_types, ...).
MATH_HEADERS = ("cublas_v2.h", "cublasLt.h", "cusparse.h", "cusolverDn.h")
MATH_HEADER_GLOBS = ("cublas*.h", "cusparse*.h", "cusolver*.h")


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _say(msg: str) -> None:
    print(f"[effrank_fast setup] {msg}", file=sys.stderr)


class CudaUnusable(Exception):
    """Why the CUDA kernels cannot be built here (a sentence)."""


def _toolkit_include(home: str) -> str | None:
    for sub in ("include", os.path.join("targets", "x86_64-linux", "include")):
        if os.path.isfile(os.path.join(home, sub, "cuda_runtime.h")):
            return os.path.join(home, sub)
    return None


def find_cuda_home(torch_cuda_home: str | None, torch_cuda: str) -> str:
    """A CUDA_HOME holding both bin/nvcc and cuda_runtime.h. torch derives its guess from
    ``which nvcc``, which gives /usr/local for a wrapper script in /usr/local/bin."""
    candidates = [("CUDA_HOME", os.environ.get("CUDA_HOME")), ("CUDA_PATH", os.environ.get("CUDA_PATH"))]
    candidates += [("torch's guess from `which nvcc`", torch_cuda_home), ("the default", "/usr/local/cuda")]
    candidates += [("the versioned default", f"/usr/local/cuda-{torch_cuda}")]
    rejected = []
    for origin, home in candidates:
        if not home:
            continue
        missing = [
            what
            for what, ok in (
                ("bin/nvcc", os.path.isfile(os.path.join(home, "bin", "nvcc"))),
                ("include/cuda_runtime.h", _toolkit_include(home) is not None),
            )
            if not ok
        ]
        if not missing:
            if rejected:
                _say(f"CUDA_HOME={home} ({origin}); rejected: {'; '.join(rejected)}")
            return home
        rejected.append(f"{home} ({origin}) lacks {' and '.join(missing)}")
    why = "; ".join(rejected) or "nvcc is not on PATH and CUDA_HOME is unset"
    raise CudaUnusable(f"no CUDA toolkit found: {why}")


def _wheel_roots(torch_dir: str) -> list[str]:
    """``site-packages/nvidia`` folders: beside torch first, then every site directory."""
    dirs = [os.path.dirname(torch_dir), *site.getsitepackages(), site.getusersitepackages(), *sys.path]
    roots = []
    for d in dirs:
        root = os.path.join(d, "nvidia")
        if os.path.isdir(root) and root not in roots:
            roots.append(root)
    return roots


def _wheel_dirs(roots: list[str], cuda_major: str, kind: str) -> list[str]:
    """CUDA 13 wheels share ``nvidia/cu13/{include,lib}``; CUDA 12 ones have ``nvidia/<lib>/...``."""
    out = []
    for root in roots:
        out += [os.path.join(root, f"cu{cuda_major}", kind)]
        out += sorted(glob.glob(os.path.join(root, "*", kind)))
    return [d for d in dict.fromkeys(out) if os.path.isdir(d)]


def math_header_dirs(cuda_home: str, roots: list[str], cuda_major: str, build_dir: str) -> list[str]:
    """Include dirs for MATH_HEADERS: none when the toolkit has them, else a folder of links to only the
    math libraries' headers from the wheels (a whole wheel include dir would shadow the toolkit's
    cuda_runtime.h with the wheel's)."""
    toolkit = _toolkit_include(cuda_home)
    missing = [h for h in MATH_HEADERS if not os.path.isfile(os.path.join(str(toolkit), h))]
    if not missing:
        return []
    farm = os.path.join(build_dir, "cuda_math_include")
    os.makedirs(farm, exist_ok=True)
    for d in _wheel_dirs(roots, cuda_major, "include"):
        for pattern in MATH_HEADER_GLOBS:
            for src in glob.glob(os.path.join(d, pattern)):
                dst = os.path.join(farm, os.path.basename(src))
                if not os.path.exists(dst):
                    os.symlink(src, dst)
    still = [h for h in missing if not os.path.isfile(os.path.join(farm, h))]
    if still:
        raise CudaUnusable(
            f"{', '.join(still)} not found in {toolkit} nor in the nvidia wheels "
            f"({', '.join(roots) or 'no site-packages/nvidia folder'}); install the CUDA math libraries "
            f"or `pip install nvidia-cublas nvidia-cusparse nvidia-cusolver` for CUDA {cuda_major}"
        )
    _say(f"{', '.join(missing)} taken from the nvidia wheels (linked into {farm})")
    return [farm]


def find_library(name: str, cuda_home: str, roots: list[str], cuda_major: str) -> str:
    """Full path of ``lib<name>.so.<major>`` (the wheels ship only versioned names), toolkit first."""
    dirs = [os.path.join(cuda_home, sub) for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"))]
    dirs += _wheel_dirs(roots, cuda_major, "lib")
    for d in dirs:
        for file in (f"lib{name}.so.{cuda_major}", f"lib{name}.so"):
            path = os.path.join(d, file)
            if os.path.isfile(path):
                return path
    raise CudaUnusable(f"lib{name}.so.{cuda_major} not found in {', '.join(dirs)}")


def torch_cxx_std(torch) -> str:
    """The C++ standard torch's cpp_extension compiles extensions with (c++17 up to torch 2.12,
    c++20 from 2.13 on), read from its source; by version if that fails."""
    override = os.environ.get("EFFRANK_FAST_CXX_STD")
    if override:
        return override
    from torch.utils import cpp_extension

    try:
        found = re.findall(r"c\+\+(\d\d)", inspect.getsource(cpp_extension.BuildExtension.build_extensions))
    except (OSError, TypeError):
        found = []
    if found:
        return f"c++{max(int(v) for v in found)}"
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    return "c++20" if (major, minor) >= (2, 13) else "c++17"


def _cuda_skip_reason(torch) -> str | None:
    if _flag("EFFRANK_FAST_SKIP_CUDA_BUILD"):
        return "EFFRANK_FAST_SKIP_CUDA_BUILD=1"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not (torch.cuda.is_available() or _flag("FORCE_CUDA")):
        return "no CUDA device is visible (set FORCE_CUDA=1 to build anyway)"
    return None


def cuda_extension(torch, sources: list[str], cxx_flags: list[str], std: str, debug: bool):
    """The CUDAExtension, with CUDA_HOME checked and the math libraries found; raises CudaUnusable."""
    from torch.utils import cpp_extension

    cuda_major = torch.version.cuda.split(".")[0]
    home = find_cuda_home(cpp_extension.CUDA_HOME, torch.version.cuda)
    os.environ["CUDA_HOME"] = home
    cpp_extension.CUDA_HOME = home  # torch's nvcc, include and library paths all read this global
    roots = _wheel_roots(os.path.dirname(torch.__file__))
    includes = [os.path.join(ROOT, "csrc"), *math_header_dirs(home, roots, cuda_major, os.path.join(ROOT, "build"))]
    libs = {name: find_library(name, home, roots, cuda_major) for name in ("cudart", "cublas")}
    link = ["-fopenmp"]
    for path in libs.values():  # by full path: -lcublas needs an unversioned libcublas.so
        link += [path, f"-Wl,-rpath,{os.path.dirname(path)}"]
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
    nvcc_flags = ["-O0", "-G", "-g"] if debug else ["-O3", "-lineinfo"]
    nvcc_flags += [f"-std={std}", "--expt-relaxed-constexpr"]
    ext = cpp_extension.CUDAExtension(
        "effrank_fast._C",
        sources,
        extra_compile_args={"cxx": cxx_flags + ["-DEFFRANK_FAST_WITH_CUDA"], "nvcc": nvcc_flags},
        extra_link_args=link,
        include_dirs=includes,
    )
    ext.libraries = [lib for lib in ext.libraries if lib != "cudart"]  # linked by full path above
    _say(
        f"building C++ and CUDA kernels for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}, "
        f"-std={std}, CUDA_HOME={home}, nvcc {shutil.which('nvcc', path=os.path.join(home, 'bin'))}; linking "
        + ", ".join(libs.values())
    )
    return ext


def get_extensions() -> list:
    if _flag("EFFRANK_FAST_SKIP_BUILD"):
        _say("EFFRANK_FAST_SKIP_BUILD=1: skipping the native extension; pure-PyTorch backends only.")
        return []
    try:
        import torch
        from torch.utils.cpp_extension import CppExtension
    except ImportError as exc:
        _say(f"torch is not importable ({exc}); skipping the native extension.")
        return []

    debug = _flag("DEBUG")
    std = torch_cxx_std(torch)
    cxx_flags = (["-O0", "-g"] if debug else ["-O3"]) + [f"-std={std}", "-fopenmp"]
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))

    reason = _cuda_skip_reason(torch) if cuda_sources else "no .cu sources"
    if reason is None:
        try:
            ext = cuda_extension(torch, cpp_sources + cuda_sources, cxx_flags, std, debug)
            _write_build_config(os.environ["TORCH_CUDA_ARCH_LIST"])
            return [ext]
        except CudaUnusable as exc:
            reason = str(exc)
    if _flag("EFFRANK_FAST_REQUIRE_CUDA"):
        raise SystemExit(
            f"[effrank_fast setup] EFFRANK_FAST_REQUIRE_CUDA=1, but the CUDA kernels cannot be built: {reason}"
        )
    _say(f"skipping the CUDA kernels: {reason}. Building the C++ CPU kernels only (-std={std}).")
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
    with a reason instead of a "no kernel image" error (effrank_fast/ops/native.py)."""
    path = os.path.join(ROOT, "effrank_fast", "_build_config.py")
    with open(path, "w") as f:
        f.write(f'"""Written by setup.py at build time (not tracked)."""\n\nCUDA_ARCH_LIST = {cuda_arch_list!r}\n')


def get_cmdclass() -> dict:
    try:
        from torch.utils.cpp_extension import BuildExtension
    except ImportError:
        return {}
    return {"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)}


if __name__ == "__main__":
    setup(ext_modules=get_extensions(), cmdclass=get_cmdclass())
