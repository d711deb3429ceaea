"""Bad input gets a clear error that names the argument."""

from __future__ import annotations

import pytest
import torch

import effrank_fast as ef

PHI = torch.randn(20, 5)
FNS = [
    lambda **kw: ef.eps_rank(eps=0.1, **kw),
    lambda **kw: ef.entropy_rank(**kw),
    lambda **kw: ef.stable_rank(**kw),
    lambda **kw: ef.participation_ratio(**kw),
    lambda **kw: ef.eigenvalues(**kw),
    lambda **kw: ef.measures(eps=0.1, **kw),
]
IDS = ["eps_rank", "entropy_rank", "stable_rank", "participation_ratio", "eigenvalues", "measures"]


@pytest.mark.parametrize("fn", FNS, ids=IDS)
def test_nan_and_inf_are_counted(fn):
    bad = PHI.clone()
    bad[3, 1] = float("nan")
    bad[7, 4] = float("inf")
    with pytest.raises(ValueError, match=r"phi contains 2 NaN/Inf entries \(of 100\)"):
        fn(phi=bad)


@pytest.mark.parametrize("fn", FNS, ids=IDS)
@pytest.mark.parametrize(
    "phi,match",
    [
        (torch.randn(0, 5), "phi is an empty batch: N = 0"),
        (torch.randn(5, 0), "phi has no features: d = 0"),
        (torch.randn(5), "phi must have shape \\[N, d\\] \\(2 dimensions\\), got 1"),
        (torch.randn(2, 3, 4), "phi must have shape \\[N, d\\] \\(2 dimensions\\), got 3"),
    ],
)
def test_shapes(fn, phi, match):
    with pytest.raises(ValueError, match=match):
        fn(phi=phi)


@pytest.mark.parametrize("fn", FNS, ids=IDS)
def test_dtype_and_type(fn):
    with pytest.raises(TypeError, match="phi must be float16, bfloat16, float32 or float64, got torch.int64"):
        fn(phi=torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="phi must be a torch.Tensor"):
        fn(phi=[[1.0, 2.0]])


@pytest.mark.parametrize(
    "weights,exc,match",
    [
        (-torch.ones(20), ValueError, "weights must be non-negative; 20 of 20 entries are negative"),
        (torch.full((20,), float("nan")), ValueError, "weights contains 20 NaN/Inf entries"),
        (torch.ones(19), ValueError, r"weights must have shape \[N\] = \[20\]"),
        (torch.ones(20, 1), ValueError, r"weights must have shape \[N\] = \[20\]"),
        (torch.ones(20, dtype=torch.int64), TypeError, "weights must be a floating-point tensor"),
        ([1.0] * 20, TypeError, "weights must be a torch.Tensor"),
    ],
)
def test_bad_weights(weights, exc, match):
    with pytest.raises(exc, match=match):
        ef.eps_rank(PHI, 0.1, weights=weights)


@pytest.mark.parametrize(
    "eps,exc,match",
    [
        (0.0, ValueError, "eps must be > 0"),
        (-1e-3, ValueError, "eps must be > 0"),
        (float("nan"), ValueError, "eps must be finite"),
        (float("inf"), ValueError, "eps must be finite"),
        ([1e-3, -1.0], ValueError, "eps must be > 0"),
        ([], ValueError, "eps is empty"),
        (None, ValueError, "eps is required"),
        ("0.1", TypeError, "eps must be a number"),
        (torch.ones(2, 2), ValueError, "eps must be a scalar, a list or a 1-D tensor"),
    ],
)
def test_bad_eps(eps, exc, match):
    with pytest.raises(exc, match=match):
        ef.eps_rank(PHI, eps)


def test_bad_options():
    with pytest.raises(ValueError, match="relative must be None, 'max' or 'trace', got 'min'"):
        ef.eps_rank(PHI, 0.1, relative="min")
    with pytest.raises(ValueError, match="mode must be one of"):
        ef.entropy_rank(PHI, mode="average")
    with pytest.raises(ValueError, match="mode='integral' needs weights="):
        ef.gram(PHI, mode="integral")
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        ef.stable_rank(PHI, backend="cuda")
    with pytest.raises(ValueError, match="method must be 'auto', 'eigh' or 'inertia'"):
        ef.eps_rank(PHI, 0.1, method="lanczos")
    with pytest.raises(ValueError, match="k must be a positive int"):
        ef.eigenvalues(PHI, k=0)
    with pytest.raises(TypeError, match="acc_dtype must be torch.float32 or torch.float64"):
        ef.gram(PHI, acc_dtype=torch.float16)


def test_bad_gram():
    with pytest.raises(ValueError, match=r"gram must be square \[d, d\], got shape \(3, 4\)"):
        ef.entropy_rank(gram=torch.ones(3, 4))
    m = torch.eye(4, dtype=torch.float64)
    m[0, 1] = 0.5
    with pytest.raises(ValueError, match="gram is not symmetric"):
        ef.eps_rank(gram=m, eps=0.1)
    m = torch.eye(4)
    m[2, 2] = float("nan")
    with pytest.raises(ValueError, match="gram contains 1 NaN/Inf entries"):
        ef.stable_rank(gram=m)
    with pytest.raises(ValueError, match="give either phi or gram=, not both"):
        ef.stable_rank(PHI, gram=torch.eye(5))
    with pytest.raises(ValueError, match="weights apply to phi"):
        ef.stable_rank(gram=torch.eye(5), weights=torch.ones(5))
    with pytest.raises(ValueError, match="give the features phi"):
        ef.stable_rank()


def test_env_backend_is_validated(monkeypatch):
    monkeypatch.setenv("EFFRANK_FAST_BACKEND", "fastest")
    with pytest.raises(ValueError, match="from EFFRANK_FAST_BACKEND"):
        ef.gram(PHI)


def test_refusal_explains_itself(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ef.BackendUnavailableError, match="backend='triton' cannot run on cpu"):
        ef.gram(PHI, backend="triton")
