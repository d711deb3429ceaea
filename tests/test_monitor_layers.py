"""Hook discovery: Sequential, nested custom modules, a reused last Linear, names, modules, callables.

Each test recomputes the features the monitor should have captured by hand and checks the
logged measures against the float64 oracle (effrank_fast.rank.reference) on those features.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import effrank_fast as ef
from effrank_fast import RankMonitor

EPS = [1e-1, 1e-3]


def _check_row(row, phi, *, weights=None, mode="mean", center=False):
    """The row's measures equal the oracle's on the features ``phi`` (float64 throughout)."""
    ref = ef.reference.measures(phi.double(), EPS, weights=weights, mode=mode, center=center)
    assert [row[f"eps_rank@{e:g}"] for e in EPS] == ref.eps_rank.tolist()
    # Float64 Gram + eigvalsh vs float64 SVD: agreement to a few ulps of λ_max.
    tol = 1e-10 * float(ref.lambda_max)
    assert row["trace"] == pytest.approx(float(ref.trace), abs=tol)
    for i in range(min(4, phi.shape[1])):
        assert row[f"lambda_{i + 1}"] == pytest.approx(float(ref.eigenvalues[i]), abs=tol)
    # σ = √λ: Gram rounding of ~1e-16·λ_max becomes σ noise of ~1e-8·σ_max on the (near-)zero
    # directions, and each adds ~p·|log p| to the entropy, so agreement is ~1e-7 relative at best.
    assert row["entropy_rank"] == pytest.approx(float(ref.entropy_rank), rel=1e-6)


def _rows(mon, layer):
    return [r for r in mon.history if r["layer"] == layer]


def _mlp():
    return nn.Sequential(nn.Linear(2, 12), nn.Tanh(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3))


def test_sequential_last_and_all_hidden():
    model = _mlp().double()
    x = torch.randn(200, 2, dtype=torch.float64)
    with RankMonitor(model, "last_hidden", EPS) as last, RankMonitor(model, "all_hidden", EPS) as every:
        model(x)
        last.step()
        every.step()
    assert [l.label for l in last.layers] == ["last_hidden"]
    assert last.layer_info()["last_hidden"]["module"] == "4"
    _check_row(_rows(last, "last_hidden")[0], model[:4](x))
    assert list(every.layer_info()) == ["hidden1", "hidden2"]
    _check_row(_rows(every, "hidden1")[0], model[:2](x))
    _check_row(_rows(every, "hidden2")[0], model[:4](x))


class Block(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x):
        return torch.tanh(self.lin(x))  # functional activation: no module to hook


class Nested(nn.Module):
    """The head is registered first but called last; blocks live in a ModuleList inside a wrapper."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 1)
        self.body = nn.ModuleDict({"blocks": nn.ModuleList([Block(3, 8), Block(8, 8), Block(8, 8)])})
        self.scale = 0.5

    def features(self, x):
        hs = []
        for b in self.body["blocks"]:
            x = b(x)
            hs.append(x)
        return hs

    def forward(self, x):
        return self.head(self.features(x)[-1] * self.scale)


def test_nested_custom_modules_in_call_order():
    torch.manual_seed(1)
    model = Nested().double()
    x = torch.randn(300, 3, dtype=torch.float64)
    probe_w = torch.rand(300, dtype=torch.float64)
    with RankMonitor(model, "all_hidden", EPS, probe=x, weights=probe_w, mode="sum") as mon:
        mon.step()
    hs = model.features(x)
    # The blocks of the ModuleList are repeated blocks: their outputs are layers (block 1 and 2
    # read hs[0] and hs[1], the same tensors: one layer each), then the head's input 0.5·h3.
    assert mon.layer_names == ["hidden1", "hidden2", "hidden3", "hidden4"]
    assert [mon.layer_info()[f"hidden{i}"]["module"] for i in (1, 2, 3, 4)] == [
        "body.blocks.0",
        "body.blocks.1",
        "body.blocks.2",
        "head",
    ]
    for i, phi in enumerate([hs[0], hs[1], hs[2], hs[2] * 0.5]):
        _check_row(_rows(mon, f"hidden{i + 1}")[0], phi, weights=probe_w, mode="sum")
    with RankMonitor(model, eps=EPS, probe=x) as last:  # default: last_hidden
        last.step()
    _check_row(_rows(last, "last_hidden")[0], hs[2] * 0.5)


class ReusedHead(nn.Module):
    """The final Linear is applied twice (to two branches); a hidden Linear is also reused."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(2, 6)
        self.hid = nn.Linear(6, 6)
        self.out = nn.Linear(6, 2)

    def branches(self, x):
        h = torch.tanh(self.inp(x))
        a = torch.tanh(self.hid(h))
        b = torch.sin(self.hid(a))  # second call of hid
        return h, a, b

    def forward(self, x):
        h, a, b = self.branches(x)
        return self.out(a) + self.out(b)  # out called twice: its last call reads b


def test_reused_last_linear():
    torch.manual_seed(2)
    model = ReusedHead().double()
    x = torch.randn(150, 2, dtype=torch.float64)
    with RankMonitor(model, "last_hidden", EPS) as last, RankMonitor(model, "all_hidden", EPS) as every:
        model(x).sum().backward()
        last.step()
        every.step()
    h, a, b = model.branches(x)
    info = last.layer_info()["last_hidden"]
    assert info["module"] == "out" and info["call"] == 1
    _check_row(_rows(last, "last_hidden")[0], b)
    # Calls in order: inp(x) [model input: skipped], hid(h), hid(a), out(a) [a again: one layer], out(b).
    expected = {"hidden1": h, "hidden2": a, "hidden3": b}
    assert list(every.layer_info()) == list(expected)
    for label, phi in expected.items():
        _check_row(_rows(every, label)[0], phi)


def test_names_modules_callables_and_dict_labels():
    model = _mlp().double()
    x = torch.randn(120, 2, dtype=torch.float64)
    spec = ["1", "4:in", model[3], lambda m: m[2]]
    with RankMonitor(model, spec, EPS) as mon, RankMonitor(model, {"first": "1", "pre": "2:in"}, EPS) as named:
        model(x)
        mon.step()
        named.step()
    assert list(mon.layer_info()) == ["1", "4:in", "3", "2"]
    _check_row(_rows(mon, "1")[0], model[:2](x))
    _check_row(_rows(mon, "4:in")[0], model[:4](x))
    _check_row(_rows(mon, "3")[0], model[:4](x))
    _check_row(_rows(mon, "2")[0], model[:3](x))  # output of a Linear
    _check_row(_rows(named, "first")[0], model[:2](x))
    _check_row(_rows(named, "pre")[0], model[:2](x))


def test_three_dimensional_activations_are_flattened():
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4)).double()
    x = torch.randn(5, 7, 4, dtype=torch.float64)  # [batch, tokens, features]
    with RankMonitor(model, "last_hidden", EPS) as mon:
        model(x)
        mon.step()
    _check_row(mon.history[0], model[:2](x).reshape(-1, 6))


def test_layer_spec_errors():
    model = _mlp()
    with pytest.raises(ValueError, match="no module named 'net.9'"):
        RankMonitor(model, ["net.9"])
    with pytest.raises(ValueError, match="duplicate labels"):
        RankMonitor(model, ["1", model[1]])
    with pytest.raises(ValueError, match="has none"):
        RankMonitor(nn.Sequential(nn.Tanh()), "last_hidden")
    with pytest.raises(ValueError, match="no hidden layer"):
        RankMonitor(nn.Sequential(nn.Linear(2, 3)), "all_hidden", probe=torch.randn(4, 2))
    with pytest.raises(TypeError, match="must return an nn.Module"):
        RankMonitor(model, [lambda m: 3])
    with pytest.raises(TypeError, match="layers"):
        RankMonitor(model, 42)


def test_close_removes_every_hook():
    model = _mlp()
    mon = RankMonitor(model, "all_hidden", probe=torch.randn(10, 2))
    assert any(m._forward_pre_hooks for m in model.modules())
    mon.close()
    mon.close()  # idempotent
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
