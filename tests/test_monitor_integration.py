"""RankMonitor wired to the real SpectrumTracker (tracker="warm") and the real fused kernel (fused=True)."""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
from torch import nn

import effrank_fast as ef


def _train(monitor_kwargs: dict, steps: int = 30, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 1))
    x = torch.linspace(-1, 1, 200).unsqueeze(1)
    y = sum(torch.sin(k * torch.pi * x) for k in range(1, 6))
    xq, wq = ef.quadrature.trapezoid(-1.0, 1.0, 300)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with ef.RankMonitor(model, eps=[1e-2, 1e-4], probe=xq, weights=wq, flush_every=10, **monitor_kwargs) as mon:
        for _ in range(steps):
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss=loss)
    return mon.history


def test_warm_tracker_interval_contains_exact_count():
    exact = _train({})
    warm = _train({"tracker": "warm", "tracker_options": {"k": 8, "refresh_every": 10}})
    assert len(exact) == len(warm) == 30
    for e_row, w_row in zip(exact, warm, strict=True):
        assert e_row["step"] == w_row["step"]
        for label in ("0.01", "0.0001"):
            truth = e_row[f"eps_rank@{label}"]  # same training (the monitor never changes it), exact spectrum
            assert w_row[f"eps_rank_lower@{label}"] <= truth <= w_row[f"eps_rank_upper@{label}"]
            assert w_row[f"eps_rank_lower@{label}"] <= w_row[f"eps_rank@{label}"] <= w_row[f"eps_rank_upper@{label}"]


def test_fused_mode_matches_unfused_counts():
    """fused=True forms M from the Linear's input through linear_act_gram (its PyTorch path on the
    CPU; the Triton kernel is tested against the same reference in test_linear_act_gram.py). The
    features are the same up to fp32 rounding, so the stable rank agrees to ~1e-6 and the counts
    agree (no eigenvalue of these spectra sits within that of ε)."""
    plain = _train({"layers": "all_hidden"}, steps=5)
    fused = _train({"layers": "all_hidden", "fused": True}, steps=5)
    assert len(plain) == len(fused)
    for p, f in zip(plain, fused, strict=True):
        assert (p["step"], p["layer"]) == (f["step"], f["layer"])
        assert abs(p["stable_rank"] - f["stable_rank"]) <= 1e-4 * p["stable_rank"]
        assert p["eps_rank@0.01"] == f["eps_rank@0.01"]


def test_submodule_forward_without_root_call_resolves_and_sums_micro_batches():
    """Like Lightning's training_step calling ``self.net(x)``: the monitored root is never called.
    Layers resolve at step(), and afterwards every micro-batch of a step adds to the Gram."""

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 10), nn.Tanh(), nn.Linear(10, 1))

    torch.manual_seed(0)
    model = Wrapper()
    batches = [torch.randn(16, 3) for _ in range(6)]
    with ef.RankMonitor(model, eps=[1e-3], mode="sum", flush_every=1, spectrum_every=1) as mon:
        for step in range(3):
            for x in batches[2 * step : 2 * step + 2]:  # two micro-batches per step
                model.net(x).sum().backward()
            mon.step()
    rows = mon.history
    assert [r["step"] for r in rows] == [0, 1, 2]
    for step in (1, 2):  # step 0 resolves the layers from the first forward only
        feats = torch.cat([torch.tanh(model.net[0](x)) for x in batches[2 * step : 2 * step + 2]]).detach()
        want = ef.reference.eigenvalues(feats, mode="sum")
        assert rows[step]["lambda_1"] == pytest.approx(float(want[0]), rel=1e-5)
        assert rows[step]["eps_rank@0.001"] == int(ef.reference.eps_rank(feats, 1e-3, mode="sum"))


def _warm_rows(steps: int, options: dict | None, split: int | None = None, step_guard=None, **monitor_kwargs):
    """A training run monitored with tracker="warm"; with ``split`` the monitor is checkpointed
    after that many steps (through torch.save/load) and replaced by a new one resumed from it.
    ``step_guard``: a context manager factory entered around each ``mon.step()``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 1))
    x = torch.linspace(-1, 1, 200).unsqueeze(1)
    y = sum(torch.sin(k * torch.pi * x) for k in range(1, 6))
    xq, wq = ef.quadrature.trapezoid(-1.0, 1.0, 300)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    kw = {"eps": [1e-2, 1e-4], "probe": xq, "weights": wq, "tracker": "warm", "tracker_options": options}
    kw.update(flush_every=1000, **monitor_kwargs)
    mon = ef.RankMonitor(model, **kw)
    for s in range(steps):
        if s == split:
            buf = io.BytesIO()
            torch.save(mon.state_dict(), buf)
            mon.close()
            mon = ef.RankMonitor(model, **kw)
            buf.seek(0)
            mon.load_state_dict(torch.load(buf, weights_only=False))
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step_guard is None:
            mon.step(loss=loss)
        else:
            with step_guard():
                mon.step(loss=loss)
    mon.close()
    return mon.history, mon.engine.columns()


def test_warm_engine_defaults_are_sync_free_and_refreshing():
    from effrank_fast.monitor.engines import make_engine

    eps = torch.tensor([1e-2], dtype=torch.float64)

    def tracker(options):
        engine = make_engine("warm", eps, None, 4, mode="mean", center=False, options=options)
        return engine.factory(d=16, eps=[1e-2], relative=None)

    default = tracker(None)
    assert (default.sync, default.refresh_every, default.k) == ("deferred", 100, 16)
    custom = tracker({"sync": "step", "refresh_every": None, "k": 4})
    assert (custom.sync, custom.refresh_every, custom.k) == ("step", None, 4)


def test_warm_tracker_step_reads_nothing_back_and_refreshes(monkeypatch):
    """step() with tracker="warm" (its defaults: sync="deferred") must not read the device. The one
    read allowed is of the deferred flags' host copy (HostFlags.poll: on CUDA a pinned copy whose
    event has completed). The periodic exact refresh shows in the path codes: all EIGH exactly on
    the refresh steps (the tracker counts updates from 1; one update per measured step)."""
    from effrank_fast.tracker.deferred import HostFlags

    inside_poll = []
    real_poll = HostFlags.poll

    def poll(self):
        inside_poll.append(True)
        try:
            return real_poll(self)
        finally:
            inside_poll.pop()

    def guard(name):
        real = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            if not inside_poll:
                raise AssertionError(f"host read Tensor.{name} inside RankMonitor.step()")
            return real(self, *args, **kwargs)

        return method

    @contextlib.contextmanager
    def no_reads():
        with monkeypatch.context() as m:
            m.setattr(HostFlags, "poll", poll)
            for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
                m.setattr(torch.Tensor, name, guard(name))
            yield

    rows, _ = _warm_rows(12, {"k": 8, "refresh_every": 5}, step_guard=no_reads)
    assert len(rows) == 12 and not any(r["error"] for r in rows)
    eigh = int(ef.TrackPath.EIGH)
    refreshed = [r["step"] for r in rows if all(r[f"eps_rank_path@{e}"] == eigh for e in ("0.01", "0.0001"))]
    assert refreshed == [4, 9]
    for r in rows:
        for e in ("0.01", "0.0001"):
            assert r[f"eps_rank_lower@{e}"] <= r[f"eps_rank@{e}"] <= r[f"eps_rank_upper@{e}"]


def test_resumed_monitor_continues_the_warm_tracker():
    """A checkpointed and resumed monitor must give exactly the rows of an uninterrupted run: the
    trackers' state (basis, k, counters, pending decisions, generator) goes through the engine's
    state. Resumed cold, the Ritz values and intervals of the next steps would differ."""
    options = {"k": 8, "refresh_every": 50}
    full, cols = _warm_rows(10, options)
    resumed, _ = _warm_rows(10, options, split=6)
    assert [r["step"] for r in resumed] == list(range(10))
    for a, b in zip(full, resumed, strict=True):
        for c in cols:
            assert a[c] == b[c] or (math.isnan(a[c]) and math.isnan(b[c])), (a["step"], c, a[c], b[c])


class _OneStepLate:
    """A tracker whose results come one update late, None first (like side_stream=True on CUDA)."""

    def __init__(self, d, eps, relative):
        self.tracker, self.pending = ef.SpectrumTracker(k=min(6, d), eps=eps, relative=relative, slq_probes=0), None

    def update(self, gram):
        out, self.pending = self.pending, self.tracker.update(gram)
        return out


def test_pending_tracker_result_is_a_nan_row():
    rows, cols = _warm_rows(4, {}, tracker_options=None, tracker=_OneStepLate)
    assert not any(r["error"] for r in rows)
    assert all(math.isnan(rows[0][c]) for c in cols)
    assert all(math.isfinite(r["eps_rank@0.01"]) and math.isfinite(r["lambda_1"]) for r in rows[1:])


def test_side_stream_option_on_cpu_is_an_error_row_not_a_crash():
    with pytest.warns(RuntimeWarning, match="side_stream=True needs a CUDA gram"):
        rows, cols = _warm_rows(3, {"k": 6, "side_stream": True})
    assert len(rows) == 3 and all("CUDA" in r["error"] for r in rows)


@pytest.mark.gpu
def test_side_stream_tracker_in_the_monitor_on_cuda():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 24), nn.Tanh(), nn.Linear(24, 1)).cuda()
    xq, wq = ef.quadrature.trapezoid(-1.0, 1.0, 300)
    opts = {"k": 6, "side_stream": True}
    with ef.RankMonitor(
        model, eps=[1e-2], probe=xq.cuda(), weights=wq.cuda(), tracker="warm", tracker_options=opts
    ) as mon:
        for _ in range(4):
            mon.step()
    rows = mon.history
    assert math.isnan(rows[0]["eps_rank@0.01"]) and all(math.isfinite(r["eps_rank@0.01"]) for r in rows[1:])
