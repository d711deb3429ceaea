"""CPU benchmark of the ε-rank against the baselines users run today.

    python -m pytest benchmarks/bench_eps_rank.py --benchmark-columns=median,iqr,rounds \
        --benchmark-sort=name --benchmark-json=benchmarks/eps_rank_cpu.json

Providers, all computing #{λ(ΦᵀΦ/N) > ε} for the same fp32 features:
  svdvals        torch.linalg.svdvals(Φ) in fp32, then σ²/N > ε   (what users write today)
  gram_eigvalsh  Φᵀ Φ / N in fp32, then torch.linalg.eigvalsh      (the common faster variant)
  ef_eigh        effrank_fast.eps_rank(method="eigh")                (auto Gram + fp64 eigvalsh)
  ef_inertia     effrank_fast.eps_rank(method="inertia")             (auto Gram + fp64 LDLᵀ count)
Every provider's count is checked against the float64 reference before timing.
"""

from __future__ import annotations

import pytest
import torch

import effrank_fast as ef
from effrank_fast import _native
from effrank_fast.testing import features_with_spectrum, gapped_spectrum

SHAPES = [(20000, 256), (20000, 1024)]
EPS = 1e-3


def _svdvals(phi):
    return (torch.linalg.svdvals(phi).square() / phi.shape[0] > EPS).sum()


def _gram_eigvalsh(phi):
    return (torch.linalg.eigvalsh(phi.T @ phi / phi.shape[0]) > EPS).sum()


PROVIDERS = {
    "svdvals": _svdvals,
    "gram_eigvalsh": _gram_eigvalsh,
    "ef_eigh": lambda phi: ef.eps_rank(phi, EPS, method="eigh", check=False),
    "ef_inertia": lambda phi: ef.eps_rank(phi, EPS, method="inertia", check=False),
}


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"N{s[0]}-d{s[1]}")
def features(request):
    n, d = request.param
    lam, want = gapped_spectrum("powerlaw", d, EPS, gap=0.3, generator=torch.Generator().manual_seed(d))
    phi = features_with_spectrum(lam, n, generator=torch.Generator().manual_seed(n + d)).float()
    return phi, want


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_eps_rank_cpu(benchmark, features, provider):
    if provider == "ef_inertia" and not _native.has_kernel("inertia", "cpu"):
        pytest.skip(str(_native.NATIVE_ERROR))
    phi, want = features
    fn = PROVIDERS[provider]
    assert int(fn(phi)) == want  # never time a wrong answer
    benchmark.extra_info.update(
        {"torch": torch.__version__, "threads": torch.get_num_threads(), "N": phi.shape[0], "d": phi.shape[1]}
    )
    benchmark.pedantic(fn, args=(phi,), rounds=3, warmup_rounds=1, iterations=1)
