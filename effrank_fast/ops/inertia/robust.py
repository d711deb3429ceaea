"""The robustness ladder of the inertia count: random butterfly congruence and Bunch–Kaufman counts.

- :func:`butterfly_congruence` — Ã = Uᵀ(A ⊕ cI)U with a random recursive butterfly U (Becker,
  Baboulin, Dongarra, "Reducing the amount of pivoting in symmetric indefinite systems", 2011).
  U is nonsingular, so Ã has the inertia of A ⊕ cI (Sylvester), while the random mixing keeps the
  leading minors of Ã away from singular: pivot-free LDLᵀ of Ã grows less than that of A.
- :func:`bunch_kaufman_counts` — #{λ > τ} from ``torch.linalg.ldl_factor_ex`` (LAPACK/cuSOLVER
  ``sytrf``, diagonal pivoting with 1×1 and 2×2 blocks), reading the inertia of D block by block.

Everything here stays on the device and never synchronises.
"""

from __future__ import annotations

import math

import torch

from effrank_fast.ops.inertia.reference import symmetric_from_lower
from effrank_fast.ops.numerics import gamma

RBT_DEPTH = 2


def _gamma(n: float) -> float:
    return gamma(n)


def _butterfly_level(x: torch.Tensor, size: int, r: torch.Tensor) -> torch.Tensor:
    """Bᵀ x B for B = diag(B_1, …) of butterflies of order ``size``; B_b = [[R0, R1], [R0, −R1]]/√2.

    x: [n, n] with n a multiple of ``size``; r: [n] holds (R0, R1) of each block, block after block.
    """
    n = x.shape[0]
    nb, h = n // size, size // 2
    rr = r.view(nb, 2, h)
    xc = x.view(n, nb, 2, h)  # columns: x B
    c0, c1 = xc[:, :, 0, :], xc[:, :, 1, :]
    x = torch.stack(((c0 + c1) * rr[:, 0, :], (c0 - c1) * rr[:, 1, :]), dim=2).reshape(n, n)
    xr = x.view(nb, 2, h, n)  # rows: Bᵀ (x B)
    t0, t1 = xr[:, 0], xr[:, 1]
    x = torch.stack(((t0 + t1) * rr[:, 0, :, None], (t0 - t1) * rr[:, 1, :, None]), dim=1).reshape(n, n)
    return x * 0.5  # (1/√2)² from the two sides


def butterfly_congruence(
    a: torch.Tensor, *, depth: int = RBT_DEPTH, seed: int = 0
) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """Random butterfly congruence of a symmetric float64 matrix A [d, d] (both triangles filled).

    Returns:
        (Ã [n, n], pad, inv_norm, round_err): Ã = Uᵀ(A ⊕ cI_pad)U with n = d + pad a multiple of
        2^depth and c = ‖A‖_F/√d > 0 (so the pad adds exactly ``pad`` positive eigenvalues);
        ``inv_norm`` ≥ ‖U⁻¹‖₂ (0-d tensor), so an error E in Ã is an error ≤ inv_norm²·‖E‖₂ in A;
        ``round_err`` (0-d) bounds ‖fl(Ã) − Ã‖₂ (first-order rounding of the butterfly arithmetic).
    """
    d = a.shape[0]
    step = 2**depth
    n = -(-d // step) * step
    pad = n - d
    frob = torch.linalg.matrix_norm(a)
    if pad:
        c = torch.where(frob > 0, frob / math.sqrt(d), torch.ones_like(frob))
        big = a.new_zeros(n, n)
        big[:d, :d] = a
        big.diagonal()[d:] = c
        a = big
    gen = torch.Generator(device=a.device)
    gen.manual_seed(seed)
    inv_norm = a.new_ones(())
    r_max = a.new_ones(())
    for level in range(depth):
        # R entries exp(ρ/10), ρ ~ U[−1/2, 1/2] (Becker et al.): nearly orthogonal, well conditioned.
        r = torch.exp((torch.rand(n, generator=gen, device=a.device, dtype=torch.float64) - 0.5) / 10.0)
        a = _butterfly_level(a, n >> level, r)
        inv_norm = inv_norm / r.min()
        r_max = torch.maximum(r_max, r.max())
    # Per level, |fl(BᵀXB) − BᵀXB| ≤ γ_4 |Bᵀ||X||B| entrywise, and ‖|B|‖₂ ≤ √2·max r, ‖|X|‖₂ ≤ ‖X‖_F.
    round_err = depth * _gamma(4) * (2.0 * r_max**2) ** depth * frob
    return a, pad, inv_norm, round_err


def bk_positive_count(ld: torch.Tensor, pivots: torch.Tensor) -> torch.Tensor:
    """#{positive eigenvalues of D} for ``torch.linalg.ldl_factor`` output (lower, LAPACK pivots).

    A 2×2 block occupies k, k+1 with pivots[k] = pivots[k+1] < 0; consecutive 2×2 blocks form runs
    of negative pivots that pair up from the start of the run. Block [[a, b], [b, c]]: det < 0 gives
    one positive eigenvalue, det > 0 two if a > 0 (else none), det = 0 one if a + c > 0.
    """
    n = ld.shape[-1]
    diag = ld.diagonal()
    idx = torch.arange(n, device=ld.device)
    neg = pivots < 0
    prev = torch.cat((neg.new_zeros(1), neg[:-1]))
    starts = torch.where(neg & ~prev, idx, torch.full_like(idx, -1))
    run_start = torch.cummax(starts, dim=0).values
    first = neg & ((idx - run_start) % 2 == 0)
    one_by_one = (~neg & (diag > 0)).sum()
    # Evaluate the 2×2 rule at every k and keep the block starts (no boolean indexing: no sync).
    a = diag
    c = torch.cat((diag[1:], diag.new_zeros(1)))
    b = torch.cat((ld.diagonal(-1), diag.new_zeros(1)))
    det = a * c - b * b
    two = torch.where(det < 0, 1, torch.where(det > 0, 2 * (a > 0).long(), (a + c > 0).long()))
    return one_by_one + torch.where(first, two, 0).sum()


def bunch_kaufman_counts(gram: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """#{λ(M) > τ_e} [E] int64 from a Bunch–Kaufman LDLᵀ of M − τ_e I (lower triangle of M)."""
    m = symmetric_from_lower(gram)
    out = []
    for t in range(thresholds.shape[0]):
        a = m - thresholds[t] * torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
        ld, piv, _ = torch.linalg.ldl_factor_ex(a)
        out.append(bk_positive_count(ld, piv))
    return torch.stack(out) if out else thresholds.new_zeros(0, dtype=torch.int64)
