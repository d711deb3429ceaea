"""RankMonitor on a ``torch.compile``d module (CPU: inductor's C++ path, no Triton).

The monitor's hooks must add no graph break (dynamo's own counters say), layer names work without
the ``_orig_mod.`` prefix, a probe runs on the original module, and the logged measures are those
of the float64 reference on the activations of the same parameters.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import effrank_fast as ef
from effrank_fast import RankMonitor

torch_dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.utils import counters  # noqa: E402

EPS = [1e-1, 1e-3]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 12), nn.Tanh(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 1)).double()


def _check(row, phi):
    lam = torch.linalg.eigvalsh((phi.T @ phi / phi.shape[0]).double()).flip(0)  # float64 reference
    assert [row[f"eps_rank@{e:g}"] for e in EPS] == [int((lam > e).sum()) for e in EPS]
    assert row["lambda_1"] == pytest.approx(float(lam[0]), rel=1e-9)


def _train(compiled, model, mon, xs):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    feats = []
    for x in xs:
        with torch.no_grad():
            feats.append((model[:2](x), model[:4](x)))  # θ_t, before the step
        loss = compiled(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(loss=loss)
    return feats


@pytest.mark.parametrize("layers", [["1", "_orig_mod.3"], "all_hidden"])
def test_batch_features_on_a_compiled_module_without_graph_breaks(layers):
    model = _model()
    compiled = torch.compile(model)  # inductor: C++ on the CPU
    torch_dynamo.reset()
    counters.clear()
    xs = [torch.randn(40, 2, dtype=torch.float64) for _ in range(3)]
    with RankMonitor(compiled, layers, EPS) as mon:
        feats = _train(compiled, model, mon, xs)
    assert not counters["graph_break"], dict(counters["graph_break"])
    names = mon.layer_names
    assert len(names) == 2
    if layers != "all_hidden":
        assert names == ["1", "3"]  # the prefix is dropped
    rows = mon.history
    assert len(rows) == 6
    for s, (h1, h2) in enumerate(feats):
        _check(rows[2 * s], h1)
        _check(rows[2 * s + 1], h2)


def test_probe_on_a_compiled_module():
    model = _model()
    compiled = torch.compile(model, backend="eager")  # the probe path does not depend on the backend
    torch_dynamo.reset()
    counters.clear()
    probe = torch.linspace(-1, 1, 60, dtype=torch.float64).reshape(30, 2)
    xs = [torch.randn(40, 2, dtype=torch.float64) for _ in range(2)]
    with RankMonitor(compiled, "all_hidden", EPS, probe=probe) as mon:
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        feats = []
        for x in xs:
            with torch.no_grad():
                feats.append((model[:2](probe), model[:4](probe)))
            loss = compiled(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss=loss)
    assert not counters["graph_break"], dict(counters["graph_break"])
    rows = mon.history
    for s, (h1, h2) in enumerate(feats):
        _check(rows[2 * s], h1)
        _check(rows[2 * s + 1], h2)


def test_attached_before_compiling_with_micro_batches():
    model = _model()
    xs = [torch.randn(40, 2, dtype=torch.float64) for _ in range(2)]
    with RankMonitor(model, ["1", "3"], EPS) as mon:
        compiled = torch.compile(model, backend="eager")
        torch_dynamo.reset()
        counters.clear()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        feats = []
        for x in xs:
            with torch.no_grad():
                feats.append((model[:2](x), model[:4](x)))
            opt.zero_grad()
            for part in x.chunk(2):  # two micro-batches: the second forward starts with events pending
                compiled(part).square().mean().backward()
            opt.step()
            mon.step()
    assert not counters["graph_break"], dict(counters["graph_break"])
    for s, (h1, h2) in enumerate(feats):
        _check(mon.history[2 * s], h1)
        _check(mon.history[2 * s + 1], h2)
    assert ef.feature_matrix(feats[0][0]).shape == (40, 12)
