"""Pure-PyTorch parallel-order Jacobi: the readable reference of ``jacobi_eigh``.

Same rotations and the same round-robin ordering as the native kernels, but unblocked (all n/2
rotations of a round at once on the whole matrix) and always running ``max_sweeps`` sweeps, so it
never reads device data (no host sync) and works under ``torch.compile``. Slow: a Python loop of
n − 1 rounds per sweep. Tests compare it, like the native kernels, with ``torch.linalg.eigvalsh``.

The round-robin index tensors are built once per (n, device) and cached: a ``torch.tensor(list,
device="cuda")`` is a pageable host→device copy, which synchronises, and it would run every round.
"""

from __future__ import annotations

import torch


def round_robin_pairs(count: int) -> tuple[list[list[int]], list[list[int]]]:
    """Circle-method pairing of ``count`` (even) indices: ``p[r][k], q[r][k]`` for round r, slot k."""
    last = count - 1
    ps, qs = [], []
    for r in range(last):
        p = [last] + [(r + k) % last for k in range(1, count // 2)]
        q = [r] + [(r - k + last) % last for k in range(1, count // 2)]
        ps.append(p)
        qs.append(q)
    return ps, qs


_PAIRS: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def pair_tensors(count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``round_robin_pairs(count)`` as int64 tensors [count − 1, count/2] on ``device`` (cached)."""
    key = (count, torch.device(device))
    cached = _PAIRS.get(key)
    if cached is None:
        ps, qs = round_robin_pairs(count) if count >= 2 else ([], [])
        shape = (len(ps), count // 2)
        p = torch.tensor(ps, dtype=torch.int64).reshape(shape)
        q = torch.tensor(qs, dtype=torch.int64).reshape(shape)
        cached = _PAIRS[key] = (p.to(device), q.to(device))
    return cached


def _rotation(app: torch.Tensor, aqq: torch.Tensor, apq: torch.Tensor):
    """(c, s, t) of the symmetric 2×2 Schur rotation; identity where a_pq = 0."""
    zero = apq == 0
    tau = (aqq - app) / (2 * torch.where(zero, torch.ones_like(apq), apq))
    sign = torch.where(tau < 0, -torch.ones_like(tau), torch.ones_like(tau))
    t = sign / (tau.abs() + torch.sqrt(1 + tau * tau))
    big = tau.abs() > (6.7e7 if apq.dtype == torch.float64 else 4.1e3)
    t = torch.where(big, 0.5 / tau, t)
    t = torch.where(zero, torch.zeros_like(t), t)
    c = torch.rsqrt(1 + t * t)
    return c, t * c, t


def jacobi_eigh_ref(
    a: torch.Tensor, max_sweeps: int = 12, tol: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the symmetric part of ``a`` by cyclic parallel-order Jacobi.

    Args:
        a: [..., n, n] float32/float64; (A + Aᵀ)/2 is used.
        max_sweeps: sweeps to run (all of them: fixed work).
        tol: the convergence level reported in ``sweeps``: the number of sweeps after which
            ‖A − diag A‖_F ≤ tol·‖A‖_F first held (0 for a diagonal input, ``max_sweeps`` if never).

    Returns:
        (eigenvalues [..., n] ascending, eigenvectors [..., n, n] (columns), off [...] float64 =
        ‖A − diag A‖_F / ‖A‖_F after the last sweep, sweeps [...] int64).
    """
    batch, n = a.shape[:-2], a.shape[-1]
    x = a.reshape(-1, n, n)
    x = (x + x.mT) / 2
    nb = x.shape[0]
    npad = n + n % 2
    A = x.new_zeros(nb, npad, npad)
    A[:, :n, :n] = x
    V = torch.eye(npad, dtype=a.dtype, device=a.device).expand(nb, npad, npad).clone()
    fro2 = A.double().square().sum((-2, -1))
    eye = torch.eye(npad, dtype=torch.bool, device=a.device)
    sweeps = torch.full((nb,), max_sweeps, dtype=torch.int64, device=a.device)
    done = A.double().masked_fill(eye, 0).square().sum((-2, -1)) <= tol * tol * fro2
    sweeps = torch.where(done, torch.zeros_like(sweeps), sweeps)
    ps, qs = pair_tensors(npad, a.device)
    for sweep in range(max_sweeps):
        for p, q in zip(ps, qs, strict=True):
            app, aqq, apq = A[:, p, p], A[:, q, q], A[:, p, q]
            c, s, t = _rotation(app, aqq, apq)
            Ap, Aq = A[:, :, p], A[:, :, q]
            A[:, :, p], A[:, :, q] = c[:, None] * Ap - s[:, None] * Aq, s[:, None] * Ap + c[:, None] * Aq
            Ap, Aq = A[:, p, :], A[:, q, :]
            A[:, p, :], A[:, q, :] = c[..., None] * Ap - s[..., None] * Aq, s[..., None] * Ap + c[..., None] * Aq
            A[:, p, p], A[:, q, q] = app - t * apq, aqq + t * apq
            A[:, p, q] = 0
            A[:, q, p] = 0
            Vp, Vq = V[:, :, p], V[:, :, q]
            V[:, :, p], V[:, :, q] = c[:, None] * Vp - s[:, None] * Vq, s[:, None] * Vp + c[:, None] * Vq
        off2 = A.double().masked_fill(eye, 0).square().sum((-2, -1))
        now = off2 <= tol * tol * fro2
        sweeps = torch.where(~done & now, torch.full_like(sweeps, sweep + 1), sweeps)
        done = done | now
    off2 = A.double().masked_fill(eye, 0).square().sum((-2, -1))
    off = torch.where(fro2 == 0, 0 * fro2, (off2 / torch.where(fro2 == 0, torch.ones_like(fro2), fro2)).sqrt())
    diag = A.diagonal(dim1=-2, dim2=-1)[:, :n]
    w, order = torch.sort(diag, dim=-1, stable=True)
    vecs = torch.gather(V[:, :n, :n], 2, order[:, None, :].expand(nb, n, n))
    return w.reshape(*batch, n), vecs.reshape(*batch, n, n), off.reshape(batch), sweeps.reshape(batch)
