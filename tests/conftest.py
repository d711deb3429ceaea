"""Shared test setup: Triton interpreter on CPU-only machines, torch threads, seeding, the GPU marker."""

from __future__ import annotations

import os

import torch

# Triton reads TRITON_INTERPRET when kernels are defined, so set it before anything imports them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    """Skip GPU-marked tests without CUDA. With EFFRANK_FAST_GPU_TESTS_ONLY=1 (the device run), keep
    only the GPU-marked tests: the CPU suites (the Triton contract suite above all, whose device is
    CUDA when there is one) would JIT-compile many kernel specialisations on the GPU for nothing."""
    # get_closest_marker, not `"gpu" in item.keywords`: keywords also hold the folder names on the
    # path, so a checkout in a folder named "gpu" would skip everything.
    if os.environ.get("EFFRANK_FAST_GPU_TESTS_ONLY") == "1":
        keep = [item for item in items if item.get_closest_marker("gpu") is not None]
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("gpu") is None])
        items[:] = keep
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def devices() -> list[str]:
    """Devices to parametrise over: CPU always, CUDA when present."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture
def deterministic():
    """torch.use_deterministic_algorithms(True) for one test (warn_only: cuBLAS needs an env var)."""
    state = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])
