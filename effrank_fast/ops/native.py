"""Load the optional compiled extension ``effrank_fast._C`` and remember why it failed.

Importing this module never raises and never initialises CUDA. ``NATIVE_ERROR`` holds the reason
in words when the extension is missing, so that backends can explain a refusal and
``python -m effrank_fast.info`` can report it. ``EFFRANK_FAST_DISABLE_NATIVE=1`` skips loading.
"""

from __future__ import annotations

import importlib
import os

import torch

HAS_NATIVE: bool = False
NATIVE_ERROR: str | None = None


def _load() -> None:
    global HAS_NATIVE, NATIVE_ERROR
    if os.environ.get("EFFRANK_FAST_DISABLE_NATIVE", "0") == "1":
        NATIVE_ERROR = "disabled by EFFRANK_FAST_DISABLE_NATIVE=1"
        return
    try:  # the optional compiled extension (no stub for the type checker): a lazy load, not a cycle
        importlib.import_module("effrank_fast._C")
    except Exception as exc:  # ImportError, or OSError for an ABI mismatch
        NATIVE_ERROR = (
            f"the compiled extension effrank_fast._C did not load ({type(exc).__name__}: {exc}); "
            "build it with `pip install --no-build-isolation -e .`"
        )
        return
    HAS_NATIVE = True


# (op, device type) → registered: the extension registers its kernels once, when it loads, and the
# hot paths (the monitor's every step) ask several times a step.
_HAS_KERNEL: dict[tuple[str, str], bool] = {}


def has_kernel(op: str, device_type: str) -> bool:
    """True when ``effrank_fast::<op>`` has a kernel registered for ``device_type`` ("cpu"/"cuda")."""
    if not HAS_NATIVE:
        return False
    known = _HAS_KERNEL.get((op, device_type))
    if known is not None:
        return known
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    try:
        found = bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"effrank_fast::{op}", key))
    except RuntimeError:
        return False
    _HAS_KERNEL[(op, device_type)] = found
    return found


# Dynamic shared memory a CUDA op needs per block beyond the default 48 KiB (opt-in), in bytes:
# inertia's panel_kernel (csrc/inertia/inertia_kernels.cuh, kPanelSmem).
CUDA_SMEM_OPTIN = {"inertia": 74752}


def kernel_missing_reason(op: str, device: torch.device | str) -> str | None:
    """None when the native kernel exists (and, for a CUDA ``torch.device``, can run on that GPU:
    built for its architecture, enough shared memory), else the reason in words."""
    device_type = device if isinstance(device, str) else device.type
    if not HAS_NATIVE:
        return NATIVE_ERROR
    if not has_kernel(op, device_type):
        return f"effrank_fast._C has no {device_type} kernel for effrank_fast::{op} (built without it)"
    if isinstance(device, torch.device) and device.type == "cuda":
        return cuda_device_reason(op, device)
    return None


def built_cuda_archs() -> str | None:
    """TORCH_CUDA_ARCH_LIST the extension was built with (setup.py records it), None if unknown."""
    try:  # written by setup.py; absent in a source tree that was never built
        config = importlib.import_module("effrank_fast._build_config")
    except ImportError:
        return None
    return getattr(config, "CUDA_ARCH_LIST", None)


def arch_runs_on(arch_list: str, capability: tuple[int, int]) -> bool:
    """Whether code built for ``arch_list`` ("9.0a", "8.0;8.6+PTX", ...) runs on a GPU of
    ``capability``: a cubin runs on its major version at an equal or higher minor, an arch-specific
    ("a") cubin only on its exact version, PTX on any equal or newer GPU (JIT)."""
    for entry in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        ptx = entry.endswith("+PTX")
        entry = entry.removesuffix("+PTX")
        specific = entry.endswith(("a", "f"))
        major_s, _, minor_s = entry.rstrip("af").partition(".")
        try:
            want = (int(major_s), int(minor_s or 0))
        except ValueError:
            continue
        if (ptx and capability >= want) or (capability == want):
            return True
        if not specific and capability[0] == want[0] and capability[1] >= want[1]:
            return True
    return False


def cuda_device_reason(op: str, device: torch.device) -> str | None:
    archs = built_cuda_archs()
    cap = torch.cuda.get_device_capability(device)
    if archs is not None and not arch_runs_on(archs, cap):
        return (
            f"effrank_fast._C was built for TORCH_CUDA_ARCH_LIST={archs}, which does not run on this "
            f"GPU (compute capability {cap[0]}.{cap[1]}); rebuild with TORCH_CUDA_ARCH_LIST={cap[0]}.{cap[1]}"
        )
    need = CUDA_SMEM_OPTIN.get(op)
    if need is not None:
        have = int(getattr(torch.cuda.get_device_properties(device), "shared_memory_per_block_optin", need))
        if have < need:
            return f"effrank_fast::{op} needs {need} bytes of shared memory per block, this GPU allows {have}"
    return None
