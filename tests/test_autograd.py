"""Autograd of gram and every float measure, on every backend that runs here (float64 gradcheck).

The gradients are checked by ``torch.autograd.gradcheck`` against finite differences of the same
function in float64, and the backends' gradients against the PyTorch backend's (plain autograd).
Triton runs under TRITON_INTERPRET=1 (set by conftest) on tiny shapes.
"""

from __future__ import annotations

import pytest
import torch

import effrank_fast as ef
from effrank_fast.ops import backends

BACKENDS = [name for name, why in backends.explain(torch.device("cpu")).items() if why is None]


def _inputs(n: int, d: int, weighted: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n, d, dtype=torch.float64, generator=g).requires_grad_()
    w = (torch.rand(n, dtype=torch.float64, generator=g) + 0.5).requires_grad_() if weighted else None
    return phi, w


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_gram_gradcheck(backend, center, weighted):
    phi, w = _inputs(7, 4, weighted)
    args = (phi,) if w is None else (phi, w)

    def f(p, wt=None):
        return ef.gram(p, wt, center=center, backend=backend, check=False)

    assert torch.autograd.gradcheck(f, args)
    g_up = torch.randn(4, 4, dtype=torch.float64)
    got = torch.autograd.grad((f(*args) * g_up).sum(), args)
    want = torch.autograd.grad((ef.gram(*args, center=center, backend="torch", check=False) * g_up).sum(), args)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_kernel_path_gradcheck(backend, center, weighted):
    """N < d: the measures go through the N×N kernel (kernel_triton on Triton)."""
    phi, w = _inputs(4, 9, weighted, seed=1)
    args = (phi,) if w is None else (phi, w)

    def f(p, wt=None):
        return ef.stable_rank(p, weights=wt, center=center, backend=backend, check=False) + ef.participation_ratio(
            p, weights=wt, center=center, backend=backend, check=False
        )

    assert torch.autograd.gradcheck(f, args)
    if backend == "triton":  # the op itself, against the kernel formed by plain autograd
        from effrank_fast.ops.gram.triton import kernel_triton

        g_up = torch.randn(4, 4, dtype=torch.float64)
        wt = w if w is not None else torch.ones(4, dtype=torch.float64)
        got = torch.autograd.grad((kernel_triton(phi, w, center, torch.float64) * g_up).sum(), args)
        x = phi - (wt @ phi / wt.sum() if center else 0)
        a = x * wt.sqrt().unsqueeze(1)
        want = torch.autograd.grad(((a @ a.T) * g_up).sum(), args)
        for p, q in zip(got, want, strict=True):
            torch.testing.assert_close(p, q)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(9, 5), (4, 7)])
def test_measures_gradcheck(backend, shape):
    phi, w = _inputs(*shape, weighted=True, seed=2)

    def f(p, wt):
        kw = {"weights": wt, "backend": backend, "check": False}
        m = ef.measures(p, 1e-3, **kw)
        return torch.stack(
            [
                ef.entropy_rank(p, **kw),
                ef.stable_rank(p, **kw),
                ef.participation_ratio(p, **kw),
                m.entropy_rank,
                m.stable_rank,
                m.participation_ratio,
                m.lambda_max,
                m.trace,
            ]
        )

    assert torch.autograd.gradcheck(f, (phi, w))


def test_entropy_rank_gradient_matches_closed_form():
    """d erank / dλ_i = erank · (−log p_i − H) / (2 σ_i Σσ) for p = σ/Σσ (chain rule by hand)."""
    lam = torch.tensor([3.0, 1.0, 0.25], dtype=torch.float64)
    q = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    m = ((q * lam) @ q.T).requires_grad_()
    er = ef.entropy_rank(gram=m)
    (g,) = torch.autograd.grad(er, m)
    sigma = lam.sqrt()
    p = sigma / sigma.sum()
    h = -(p * p.log()).sum()
    dlam = h.exp() * (-p.log() - h) / (2 * sigma * sigma.sum())
    torch.testing.assert_close(g, (q * dlam) @ q.T)


def test_counts_carry_no_gradient_and_do_not_crash():
    phi = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    c = ef.eps_rank(phi, 1e-3)
    assert not c.requires_grad and c.dtype == torch.int64
    m = ef.measures(phi, [1e-3, 1e-1])
    assert not m.eps_rank.requires_grad
    m.entropy_rank.backward()
    assert phi.grad is not None and torch.isfinite(phi.grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_backward_reaches_the_input(backend):
    """The issue's case: entropy_rank(x).backward() on float32 features leaves a real gradient."""
    x = torch.randn(30, 5, requires_grad=True)
    ef.entropy_rank(x, backend=backend).backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and x.grad.abs().sum() > 0


@pytest.mark.skipif("triton" not in BACKENDS, reason="Triton is not available")
def test_accumulate_refuses_requires_grad():
    from effrank_fast.ops.gram.triton import gram_triton

    phi = torch.randn(6, 3, requires_grad=True)
    out = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="no backward"):
        gram_triton(phi, out=out)
    with torch.no_grad():
        gram_triton(phi, out=out)
    torch.testing.assert_close(out, phi.detach().T @ phi.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("triton" not in BACKENDS, reason="Triton is not available")
def test_gram_ops_pass_opcheck():
    """The autograd registration is visible to opcheck (test_autograd_registration among its checks)."""
    import effrank_fast.ops.gram.triton  # noqa: F401  (defines the Triton ops)

    phi = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(6, dtype=torch.float64) + 0.1
    # The fake-tensor checks of a Triton op need a GPU (tests/test_gram_triton_gpu.py runs them there).
    checks = ("test_schema", "test_autograd_registration")
    torch.library.opcheck(torch.ops.effrank_fast.gram_triton.default, (phi, w, True, torch.float64), test_utils=checks)
    torch.library.opcheck(
        torch.ops.effrank_fast.kernel_triton.default, (phi, w, True, torch.float64), test_utils=checks
    )
    if "native" in BACKENDS:
        torch.library.opcheck(torch.ops.effrank_fast.gram_native.default, (phi, w, True, torch.float64))
