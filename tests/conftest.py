"""Shared test setup: Triton interpreter on CPU-only machines, seeding, GPU marker, NaN poisoning."""

from __future__ import annotations

import os

import torch

# Triton reads TRITON_INTERPRET when kernels are defined, so set it before anything imports them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
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
