"""RankMonitor wired to the real SpectrumTracker (tracker="warm") and the real fused kernel (fused=True)."""

from __future__ import annotations

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
