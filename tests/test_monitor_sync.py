"""RankMonitor.step() must not synchronise the host with the device.

On CUDA the check runs under ``torch.cuda.set_sync_debug_mode("error")``, where a synchronising
call raises. The monitor never raises: it turns the raise into an error row. So the check asserts
that no row carries an error (counting rows cannot fail). On the CPU the same check runs with the
synchronising calls replaced by ones that raise like sync debug mode, to show that it catches an
engine that syncs (``solver="eigvalsh"``: cuSOLVER's error flag is read back) and passes the
sync-free one (``solver="jacobi"``: convergence decided on the device).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from effrank_fast import RankMonitor
from effrank_fast.monitor import engines
from effrank_fast.ops import native
from effrank_fast.quadrature import trapezoid

EPS = [1e-2, 1e-3, 1e-4]
SYNC_MESSAGE = "called a synchronizing CUDA operation"  # what sync debug mode raises


def _mlp(width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))


def _monitor(device: str, width: int = 16, **kw) -> RankMonitor:
    xq, wq = trapezoid(-1, 1, 256)
    model = _mlp(width).to(device)
    return RankMonitor(model, "all_hidden", EPS, probe=xq.to(device), weights=wq.to(device), flush_every=1000, **kw)


def assert_steps_do_not_sync(mon: RankMonitor, steps: int, guard: Callable[[], contextlib.AbstractContextManager]):
    """One warm-up step (library loading, first allocations), then ``steps`` steps inside ``guard``
    (which makes every synchronising call raise); no row may carry an error."""
    mon.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the monitor warns per error row; we read the rows
        with guard():
            for _ in range(steps):
                mon.step()
    mon.flush()  # copies to the host: outside the guard
    rows = mon.history
    errors = sorted({r["error"] for r in rows if r["error"]})
    assert not errors, f"{sum(1 for r in rows if r['error'])} error rows under the sync guard: {errors}"
    assert len(rows) == (steps + 1) * len(mon.layers)
    assert all(math.isfinite(r[f"eps_rank@{EPS[0]:g}"]) for r in rows)
    return rows


@contextlib.contextmanager
def cuda_sync_errors() -> Iterator[None]:
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@contextlib.contextmanager
def simulated_sync_errors() -> Iterator[None]:
    """The calls that synchronise on CUDA raise like sync debug mode: the eigensolvers that read
    an error flag back, and the reads of a tensor's values on the host (on the CPU every tensor is
    treated as if it lived on the device, so this is stricter than CUDA). ``numpy()`` is left alone:
    a CUDA tensor refuses it outright, so on CUDA it only ever reads host (pinned) memory, which is
    how the tracker's deferred flags arrive without a sync."""

    def raising(name: str) -> Callable:
        def call(*args, **kwargs):
            raise RuntimeError(f"{name}: {SYNC_MESSAGE}")

        return call

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.linalg, "eigvalsh", raising("torch.linalg.eigvalsh"))
        mp.setattr(torch.linalg, "eigh", raising("torch.linalg.eigh"))
        # the CPU row kernel runs LAPACK's eigvalsh inside (ops/spectrum_rows): the same call
        mp.setattr(engines, "spectrum_rows", raising("spectrum_rows (LAPACK eigvalsh inside)"))
        for method in ("item", "tolist", "cpu"):
            mp.setattr(torch.Tensor, method, raising(f"Tensor.{method}"))
        yield


def _counts(rows) -> list[tuple[int, int, float]]:
    return [(r["layer"], r["step"], r[f"eps_rank@{e:g}"]) for r in rows for e in EPS]


def test_the_check_catches_an_engine_that_syncs():
    mon = _monitor("cpu", tracker="exact", tracker_options={"solver": "eigvalsh"})
    with pytest.raises(AssertionError, match="error rows under the sync guard") as info:
        assert_steps_do_not_sync(mon, 3, simulated_sync_errors)
    assert SYNC_MESSAGE in str(info.value) and "eigvalsh" in str(info.value)
    mon.close()


@pytest.mark.skipif(not native.has_kernel("jacobi_eigh", "cpu"), reason="needs the native jacobi_eigh CPU kernel")
def test_sync_free_exact_engine_passes_the_check_and_matches_eigvalsh():
    mon = _monitor("cpu", tracker="exact", tracker_options={"solver": "jacobi"})
    rows = assert_steps_do_not_sync(mon, 3, simulated_sync_errors)
    mon.close()
    ref = _monitor("cpu", tracker="exact", tracker_options={"solver": "eigvalsh"})
    for _ in range(4):
        ref.step()
    ref.close()
    assert _counts(rows) == _counts(ref.history)


@pytest.mark.gpu
def test_step_does_not_synchronise_on_cuda():
    """The default engine ("exact", solver "auto": Jacobi on CUDA), with float64 eigvalsh counts of
    the same Grams (same device, same Gram backend) as the oracle."""
    mon = _monitor("cuda")
    assert mon.engine.solver_for(torch.zeros(16, 16, device="cuda")) == "jacobi"
    rows = assert_steps_do_not_sync(mon, 3, cuda_sync_errors)
    mon.close()
    ref = _monitor("cuda", tracker="exact", tracker_options={"solver": "eigvalsh"})
    for _ in range(4):
        ref.step()
    ref.close()
    assert _counts(rows) == _counts(ref.history)


@pytest.mark.gpu
def test_the_check_catches_eigvalsh_syncing_on_cuda():
    """The check can fail on the GPU too: eigvalsh reads cuSOLVER's info flag back."""
    mon = _monitor("cuda", tracker="exact", tracker_options={"solver": "eigvalsh"})
    with pytest.raises(AssertionError, match="error rows under the sync guard"):
        assert_steps_do_not_sync(mon, 2, cuda_sync_errors)
    mon.close()


@pytest.mark.gpu
def test_warm_tracker_without_refresh_does_not_synchronise_on_cuda():
    """The sync-free choice beyond the Jacobi engine's d (JACOBI_MAX_D): the warm tracker, no refresh."""
    mon = _monitor("cuda", width=96, tracker="warm", tracker_options={"k": 16, "refresh_every": None})
    assert_steps_do_not_sync(mon, 3, cuda_sync_errors)
    mon.close()


@pytest.mark.skipif(not native.has_kernel("jacobi_eigh", "cpu"), reason="needs the native jacobi_eigh CPU kernel")
def test_warm_tracker_without_refresh_passes_the_check_on_cpu():
    """eigensolver="jacobi": what "auto" picks on CUDA (on the CPU it picks eigh, which needs no sync there)."""
    opts = {"k": 8, "refresh_every": None, "eigensolver": "jacobi"}
    mon = _monitor("cpu", width=48, tracker="warm", tracker_options=opts)
    assert_steps_do_not_sync(mon, 3, simulated_sync_errors)
    mon.close()


@pytest.mark.skipif(not native.has_kernel("jacobi_eigh", "cpu"), reason="needs the native jacobi_eigh CPU kernel")
def test_warm_started_jacobi_engine_matches_float64_eigvalsh_along_a_drifting_gram():
    """A graded (power-law) spectrum, M_{t+1} = (I + ρR)ᵀ M_t (I + ρR): every step's eigenvalues
    within the Weyl bound of the converged solve (plus V's orthogonality error) of eigvalsh's."""
    from effrank_fast.monitor.engines import JACOBI_OFF_SLACK, ExactEngine
    from effrank_fast.ops.jacobi_eigh import default_tol

    d = 120
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    m = q @ torch.diag(torch.arange(1, d + 1, dtype=torch.float64) ** -2.0) @ q.T
    engine = ExactEngine(torch.tensor(EPS, dtype=torch.float64), None, 4, mode="sum", center=False, solver="jacobi")
    u = torch.finfo(torch.float64).eps
    for step in range(12):
        lam = engine.eigenvalues(0, m)
        ref = torch.linalg.eigvalsh(m).flip(0)
        bound = (JACOBI_OFF_SLACK * default_tol(d, torch.float64) + 4 * d * u) * float(m.norm())
        assert float((lam - ref).abs().max()) <= bound, step
        r = torch.eye(d, dtype=torch.float64) + 1e-3 * torch.randn(d, d, dtype=torch.float64, generator=gen) / d**0.5
        m = r.T @ m @ r
