"""torch.compile(fullgraph=True) over the measures (reference and C++ ops; Triton ops are compiled on GPU)."""

from __future__ import annotations

import pytest
import torch

import effrank_fast as ef


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_measures_compile_fullgraph(backend):
    torch._dynamo.reset()

    def f(phi, w):
        m = ef.measures(phi, eps=[1e-2, 1e-4], weights=w, relative="trace", backend=backend, check=False)
        return m.eps_rank, m.entropy_rank, m.stable_rank, m.participation_ratio

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    phi = torch.randn(120, 16) * torch.logspace(0, -2, 16)
    w = torch.rand(120, dtype=torch.float64)
    got, want = compiled(phi, w), f(phi, w)
    assert torch.equal(got[0], want[0])
    for a, b in zip(got[1:], want[1:], strict=True):
        torch.testing.assert_close(a, b)


def test_eps_rank_eigh_compiles():
    torch._dynamo.reset()
    f = torch.compile(lambda p: ef.eps_rank(p, 1e-3, method="eigh", check=False), fullgraph=True, backend="aot_eager")
    phi = torch.randn(50, 10)
    assert int(f(phi)) == int(ef.reference.eps_rank(phi, 1e-3))
