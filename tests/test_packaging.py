"""Lean import: no CUDA initialisation, works without _C or Triton, exact public API, info runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import effrank_fast as ef


def _run(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)


def test_import_does_not_initialise_cuda():
    res = _run(
        """
        import torch
        def boom(*a, **k):
            raise RuntimeError("CUDA was initialised at import")
        torch.cuda._lazy_init = boom
        torch.cuda.current_device = boom
        torch.cuda.is_available = boom
        import effrank_fast
        print("ok", torch.cuda.is_initialized())
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok False"


def test_works_without_native_extension():
    res = _run(
        """
        import torch, effrank_fast as ef
        from effrank_fast.ops import native
        assert not native.HAS_NATIVE and "EFFRANK_FAST_DISABLE_NATIVE" in native.NATIVE_ERROR
        phi = torch.randn(200, 12, dtype=torch.float64)
        assert int(ef.eps_rank(phi, 0.5)) == int(ef.reference.eps_rank(phi, 0.5))
        try:
            ef.gram(phi, backend="native")
        except ef.BackendUnavailableError as e:
            assert "EFFRANK_FAST_DISABLE_NATIVE" in str(e)
        else:
            raise AssertionError("native backend should refuse")
        print("ok")
        """,
        {"EFFRANK_FAST_DISABLE_NATIVE": "1"},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_works_without_triton():
    res = _run(
        """
        import sys
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
        import torch, effrank_fast as ef
        from effrank_fast.ops import backends
        reason = backends.explain(torch.device("cpu"))["triton"]
        assert reason is not None and "triton" in reason, reason
        print(int(ef.eps_rank(torch.randn(50, 5), 1e-3)))
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "5"


def test_public_api_is_exactly_all():
    public = {name for name in dir(ef) if not name.startswith("_")}
    # submodules imported as a side effect are not API unless listed
    modules = {name for name in public if type(getattr(ef, name)).__name__ == "module"}
    assert public - modules <= set(ef.__all__)
    for name in ef.__all__:
        assert hasattr(ef, name), name


def test_info_reports_backends_and_reasons():
    res = subprocess.run([sys.executable, "-m", "effrank_fast.info"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "effrank_fast" in out and "torch" in out
    for name in ("torch", "native", "triton"):
        assert f"  {name}" in out
    assert "count method inertia" in out


@pytest.mark.parametrize(
    ("archs", "capability", "runs"),
    [
        ("9.0a", (9, 0), True),
        ("9.0a", (8, 0), False),  # the default build: Hopper only
        ("9.0a", (10, 0), False),  # arch-specific cubins do not carry forward
        ("8.0", (8, 6), True),  # a cubin runs on later minors of its major
        ("8.6", (8, 0), False),
        ("8.0", (9, 0), False),
        ("8.0+PTX", (9, 0), True),  # PTX is JIT-compiled for newer GPUs
        ("7.5;8.0 9.0a", (9, 0), True),
        ("7.5,8.0", (8, 9), True),
        ("", (9, 0), False),
    ],
)
def test_cuda_arch_compatibility_rule(archs, capability, runs):
    from effrank_fast.ops.native import arch_runs_on

    assert arch_runs_on(archs, capability) is runs


def test_build_records_its_cuda_arch_list():
    from effrank_fast.ops import native

    if not native.HAS_NATIVE:
        pytest.skip(f"no native extension: {native.NATIVE_ERROR}")
    archs = native.built_cuda_archs()
    if native.has_kernel("inertia", "cuda"):
        assert archs  # a CUDA build says what it targets
    else:
        assert archs is None
    assert native.kernel_missing_reason("inertia", "cpu") is None
    assert native.kernel_missing_reason("inertia", torch.device("cpu")) is None


def test_import_loads_no_dynamo():
    """torch._dynamo costs seconds to import; effrank_fast must not pull it in until torch.compile does."""
    res = _run(
        """
        import sys, time
        import torch
        t0 = time.perf_counter()
        import effrank_fast
        dt = time.perf_counter() - t0
        print("torch._dynamo" in sys.modules, f"{dt:.2f}")
        """
    )
    assert res.returncode == 0, res.stderr
    loaded, seconds = res.stdout.split()
    print(f"import effrank_fast after torch: {seconds} s")  # informative only (no timing assertion)
    assert loaded == "False"


def test_selectors_carry_the_mark_torch_compile_reads():
    """ops.backends and ops.inertia.cost mark their selectors without importing Dynamo (the decorator's own mark)."""
    from effrank_fast.ops import backends
    from effrank_fast.ops.inertia import cost

    def probe():
        return 1

    before = set(vars(probe))
    torch.compiler.assume_constant_result(probe)
    added = set(vars(probe)) - before
    assert added == {"_dynamo_marked_constant"} and probe._dynamo_marked_constant is True
    for fn in (backends.select_gram_backend, cost.select_count_method):
        assert getattr(fn, "_dynamo_marked_constant", False) is True


def test_triton_requirement_matches_what_is_tested():
    from importlib import metadata

    import tomllib
    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    (spec,) = [Requirement(r).specifier for r in project["optional-dependencies"]["triton"]]
    (ci,) = re.findall(r"triton==([0-9.]+)", (root / ".ci" / "run").read_text())
    assert spec.contains(ci) and spec.contains("3.6.0")  # CI's pin and the GPU machine's version
    assert not spec.contains("3.9.0")  # untested
    try:
        installed = metadata.version("triton")
    except metadata.PackageNotFoundError:
        pytest.skip("triton is not installed")
    assert spec.contains(installed), f"installed triton {installed} is outside the tested range {spec}"
