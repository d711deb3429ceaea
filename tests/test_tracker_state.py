"""SpectrumTracker around the update: checkpoints, the Gram buffer rule of the side stream, the
warning for a syncing eigensolver in deferred mode, and the small eigensolve's sweep cap."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import effrank_fast as ef
from effrank_fast.ops import native
from tests.test_tracker import check_result, drift_sequence

needs_native_jacobi = pytest.mark.skipif(
    native.kernel_missing_reason("jacobi_eigh", "cpu") is not None, reason="native jacobi_eigh (CPU) not built"
)


def _same(a: ef.TrackResult, b: ef.TrackResult) -> None:
    for name, x in vars(a).items():
        y = getattr(b, name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y) or (x.isnan().all() and y.isnan().all()), name
        else:
            assert x == y, name


@pytest.mark.parametrize("sync", ["step", "deferred"])
def test_resumed_tracker_continues_exactly(sync):
    """A tracker rebuilt from state_dict() (through torch.save/load) must continue bit for bit
    like the one that never stopped: same basis (no cold start), grown k, step counter (refresh
    schedule), pending decisions and generator (SLQ probes)."""
    d = 64
    eps = [1e-3, 1e-2]
    kw = {
        "k": 6,
        "oversample": 4,
        "eps": eps,
        "relative": "max",
        "sync": sync,
        "refresh_every": 7,
        "slq_probes": 4,
        "slq_steps": 6,
    }
    grams = list(drift_sequence(d, 4 * d, steps=10, rho=0.01, seed=30))
    a = ef.SpectrumTracker(**kw)
    for g in grams[:5]:
        a.update(g)
    assert a.k > 6, "the case must have grown k"
    state = a.state_dict()
    assert state["basis"].device.type == "cpu" and state["step"] == 5
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    b = ef.SpectrumTracker(**kw)
    b.load_state_dict(torch.load(buf, weights_only=False))
    cold = ef.SpectrumTracker(**kw)  # what a resume without the state did
    for g in grams[5:]:
        ra, rb, rc = a.update(g), b.update(g), cold.update(g)
        _same(ra, rb)
        check_result(rb, g, eps, "max", exact_only=(sync == "step"))
    assert rb.step == 10 and [ra.refreshed, rb.refreshed] == [False, False]
    assert rc.step == 5 and not torch.equal(rc.eigenvalues, rb.eigenvalues[: rc.k])


def test_load_state_dict_checks_the_shapes():
    g = next(drift_sequence(32, 64, steps=1, rho=0.0, seed=31))
    tr = ef.SpectrumTracker(k=4, oversample=4, slq_probes=0)
    tr.update(g)
    state = tr.state_dict()
    with pytest.raises(ValueError, match="oversample"):
        ef.SpectrumTracker(k=4, oversample=2).load_state_dict(state)
    other = ef.SpectrumTracker(k=4, oversample=4, slq_probes=0)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="d = 32"):
        other.update(torch.eye(40, dtype=torch.float64))
    with pytest.raises(ValueError, match="state_dict"):
        other.load_state_dict({"k": 4})
    fresh = ef.SpectrumTracker(k=4, oversample=4, slq_probes=0)
    fresh.load_state_dict(ef.SpectrumTracker(k=4).state_dict())  # a tracker that never ran
    assert fresh.update(g).step == 1


class _Reads(TorchDispatchMode):
    """Records the ops that read a tensor's storage (views excepted: they read nothing)."""

    VIEWS = {"aten::t", "aten::transpose", "aten::alias", "aten::view", "aten::detach", "aten::as_strided"}

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.ptr, self.ops = target.untyped_storage().data_ptr(), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        flat = [*args, *(kwargs or {}).values()]
        if name not in self.VIEWS and any(
            isinstance(x, torch.Tensor) and x.untyped_storage().data_ptr() == self.ptr for x in flat
        ):
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sync", ["step", "deferred"])
def test_update_reads_the_callers_gram_once(sync):
    """The side-stream rule (wait on ``gram_released`` before writing into the Gram) rests on the
    update reading the caller's tensor in one op at its start, the symmetrisation; everything
    after (GEMMs, exact counts, SLQ, refresh) uses that copy. On the CPU this is checked op by op.
    (``check=True`` with sync="step" validates the values first, which reads M again; a side stream
    needs sync="deferred", where nothing but shape and dtype is validated.)"""
    d = 48
    grams = list(drift_sequence(d, 4 * d, steps=4, rho=0.01, seed=32))
    tr = ef.SpectrumTracker(k=6, oversample=4, eps=[1e-2, 1e-3], relative="max", sync=sync, refresh_every=3)
    for g in grams:
        with _Reads(g) as reads:
            tr.update(g, check=False)
        assert reads.ops == ["aten::add"], reads.ops
    assert tr.gram_released is None  # only recorded on a side stream


def test_side_stream_options_are_checked():
    with pytest.raises(ValueError, match="copy_gram"):
        ef.SpectrumTracker(copy_gram=True)
    tr = ef.SpectrumTracker(k=2, sync="deferred", side_stream=True, copy_gram=True)
    with pytest.raises(ValueError, match="CUDA"):
        tr.update(torch.eye(4))


def test_deferred_mode_warns_once_when_the_eigensolve_would_sync():
    """On CUDA without the native Jacobi kernel, eigensolver="auto" falls back to torch.linalg.eigh,
    which syncs every update: deferred mode must say so (once), step mode and "jacobi" need not.
    The choice is made without touching the device, so a cuda device object suffices here."""
    cuda = torch.device("cuda")
    if ef.ops.jacobi_eigh.why_not_native(cuda) is None:
        pytest.skip("the native CUDA kernel is built: nothing falls back")
    tr = ef.SpectrumTracker(sync="deferred")
    with pytest.warns(RuntimeWarning, match="synchronises") as rec:
        assert tr._solver(cuda) == "eigh"
        assert tr._solver(cuda) == "eigh"
    assert len(rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ef.SpectrumTracker(sync="step")._solver(cuda) == "eigh"
        assert ef.SpectrumTracker(sync="deferred", eigensolver="jacobi")._solver(cuda) == "torch"


def _graded(d: int, steps: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    m = (q * torch.logspace(0, -12, d, dtype=torch.float64)) @ q.T
    for _ in range(steps):
        s = torch.eye(d, dtype=torch.float64) + 1e-3 * torch.randn(d, d, dtype=torch.float64, generator=gen) / d**0.5
        m = s.T @ m @ s
        yield (m + m.T) / 2


@needs_native_jacobi
def test_jacobi_sweep_cap_is_sound(monkeypatch):
    """jacobi_sweeps=8 (default) against a VᵀMV that needs more. In the tracker VᵀMV is nearly
    diagonal (warm: 1–2 sweeps; after a cold start's subspace iterations 2–7 at q = 288 on graded
    and clustered spectra), unlike a cold random similarity (22–32). Forced here with
    cold_iters=0 (a random basis): the cap is hit, the left-over off-diagonal shows in the
    residuals, the step is not accepted on that solve but iterates, and every reported number
    stays certified."""
    from effrank_fast.tracker import subspace

    solves = []
    real = subspace.jacobi_eigh

    def spy(h, **kw):
        res = real(h, **kw)
        solves.append((int(res.sweeps), float(res.off)))
        return res

    monkeypatch.setattr(subspace, "jacobi_eigh", spy)
    d, eps = 300, [1e-3, 1e-6]
    tr = ef.SpectrumTracker(
        k=100, oversample=28, eps=eps, relative="max", eigensolver="jacobi", cold_iters=0, slq_probes=0, auto_grow=False
    )
    for t, g in enumerate(_graded(d, steps=3, seed=33)):
        solves.clear()
        res = tr.update(g)
        check_result(res, g, eps, "max", exact_only=True)
        if t == 0:
            assert solves[0][0] == 8 and solves[0][1] > 1e-6, "the first solve must hit the cap"
            assert res.iterations >= 1
        assert bool(res.accepted)


@pytest.mark.gpu
@pytest.mark.parametrize("copy_gram", [False, True])
def test_cuda_side_stream_gram_buffer_reused_at_once(copy_gram):
    """One Gram buffer, poisoned on the current stream right after each update (as a caller that
    accumulates into it would): following the rule (wait on gram_released, or copy_gram=True)
    the results equal those from fresh tensors; without it the poison could be read."""
    d = 192
    grams = [g.cuda() for g in drift_sequence(d, 4 * d, steps=5, rho=0.01, seed=34)]
    kw = {"k": 16, "oversample": 8, "eps": [1e-2], "relative": "max", "sync": "deferred", "slq_probes": 0}
    reused = ef.SpectrumTracker(side_stream=True, copy_gram=copy_gram, **kw)
    fresh = ef.SpectrumTracker(side_stream=True, **kw)
    buf = torch.empty_like(grams[0])
    got, want = [], []
    for g in grams:
        buf.copy_(g)
        got.append(reused.update(buf))
        if not copy_gram:
            torch.cuda.current_stream().wait_event(reused.gram_released)
        buf.fill_(float("nan"))
        want.append(fresh.update(g.clone()))
        torch.cuda.synchronize()  # deferred decisions depend on whether last step's flags arrived
    got.append(reused.flush())
    want.append(fresh.flush())
    assert got[0] is None and want[0] is None
    for a, b in zip(got[1:], want[1:], strict=True):
        assert torch.isfinite(a.eigenvalues).all()
        assert torch.equal(a.eigenvalues, b.eigenvalues) and torch.equal(a.eps_rank, b.eps_rank)
