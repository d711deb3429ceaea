"""A monitor row gives the guarantees of ``ef.eps_rank`` / ``ef.measures`` on the same features:
every certified count equals the float64 reference's, every count lies in its proven bounds, the
entropy rank is within 1e-3 of the reference, and the N×N and d×d paths give the same row."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from effrank_fast import RankMonitor
from effrank_fast.monitor import Engine, Features, Probe, accumulate, core, engines
from effrank_fast.quadrature import trapezoid
from effrank_fast.rank import formulas, reference

SMALL_EPS = [1e-4, 1e-6, 1e-7, 1e-8, 1e-9]


def _tanh_mlp(width: int = 64, depth: int = 3, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    mods: list[nn.Module] = [nn.Linear(1, width), nn.Tanh()]
    for _ in range(depth - 1):
        mods += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*mods, nn.Linear(width, 1)).to(dtype)


def _hidden(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The inputs of the Linear layers after the first: what layers="all_hidden" measures."""
    out, h = [], x
    with torch.no_grad():
        for m in model[:-1]:
            h = m(h)
            if isinstance(m, nn.Tanh):
                out.append(h)
    return out


def _rows(mon: RankMonitor, steps: int = 1) -> list[dict]:
    for _ in range(steps):
        mon.step()
    mon.close()
    return mon.history


def _check_counts(row: dict, ref: torch.Tensor, eps: list[float]) -> int:
    """Certified counts equal the reference, every count within its bounds; returns #uncertified."""
    unproven = 0
    for e, r in zip(eps, ref.tolist(), strict=True):
        c, lo, hi = row[f"eps_rank@{e:g}"], row[f"eps_rank_lower@{e:g}"], row[f"eps_rank_upper@{e:g}"]
        assert lo <= r <= hi, (e, lo, r, hi)
        if row[f"eps_rank_certified@{e:g}"]:
            assert c == r == lo == hi, (e, c, r)
        else:
            unproven += 1
    return unproven


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_small_eps_counts_and_entropy_rank_match_the_float64_reference(dtype):
    """The issue's case: tanh 1-64-64-64-1, 2000-point trapezoid probe, ε down to 1e-9."""
    model = _tanh_mlp(dtype=dtype)
    xq, wq = trapezoid(-1, 1, 2000)
    xq = xq.to(dtype)
    mon = RankMonitor(model, "all_hidden", SMALL_EPS, probe=xq, weights=wq)
    rows = _rows(mon)
    feats = _hidden(model, xq)
    assert len(rows) == len(feats) == 3
    for row, phi in zip(rows, feats, strict=True):
        ref = reference.eps_rank(phi, SMALL_EPS, weights=wq, mode="integral")
        # this layer is cheap to form in float64: every count certified
        assert _check_counts(row, ref, SMALL_EPS) == 0
        er = reference.entropy_rank(phi, weights=wq, mode="integral")
        assert row["entropy_rank"] == pytest.approx(float(er), rel=1e-3)
        assert row["spectrum_solved"] == 1


def test_float32_gram_flags_what_it_cannot_prove():
    """acc_dtype=float32 (the issue's 19/32/36 at ε ≤ 1e-7): those counts are now marked, and each
    certified count still equals the reference."""
    model = _tanh_mlp()
    xq, wq = trapezoid(-1, 1, 2000)
    rows = _rows(RankMonitor(model, "all_hidden", SMALL_EPS, probe=xq, weights=wq, acc_dtype=torch.float32))
    unproven = 0
    for row, phi in zip(rows, _hidden(model, xq), strict=True):
        unproven += _check_counts(row, reference.eps_rank(phi, SMALL_EPS, weights=wq, mode="integral"), SMALL_EPS)
    assert unproven > 0


@pytest.mark.parametrize("center", [False, True])
def test_kernel_path_and_gram_path_give_the_same_row(monkeypatch, center):
    """N = 40 probe points < d = 64: the N×N kernel of the kept features, or (keep limit 0) the
    summed d×d Gram: the same counts, certificates and measures, both equal to the reference."""
    model = _tanh_mlp()
    xq, wq = trapezoid(-1, 1, 40)
    eps = [1e-2, 1e-4, 1e-6]

    def run() -> list[dict]:
        return _rows(RankMonitor(model, "all_hidden", eps, probe=xq, weights=wq, center=center, topk=4))

    kernel = run()
    monkeypatch.setattr(accumulate, "KEEP_ELEMENTS", 0)
    gram = run()
    for a, b, phi in zip(kernel, gram, _hidden(model, xq), strict=True):
        ref = reference.eps_rank(phi, eps, weights=wq, mode="integral", center=center)
        assert _check_counts(a, ref, eps) == 0 and _check_counts(b, ref, eps) == 0
        for col in ("stable_rank", "participation_ratio", "trace", "lambda_1", "lambda_4"):
            assert a[col] == pytest.approx(b[col], rel=1e-9, abs=1e-12), col
        # the noise floors of an [N, N] and a [d, d] matrix differ: both within the contract
        er = float(reference.entropy_rank(phi, weights=wq, mode="integral", center=center))
        assert a["entropy_rank"] == pytest.approx(er, rel=1e-3) and b["entropy_rank"] == pytest.approx(er, rel=1e-3)


def test_spectrum_cadence_and_every_step_columns():
    """full_every=3: the spectrum's measures at measured steps 0, 3 (NaN between); counts, trace
    and participation ratio every step, each against the reference of that step's features."""
    model = _tanh_mlp(width=16, depth=2)
    xq, wq = trapezoid(-1, 1, 200)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    mon = RankMonitor(model, "all_hidden", [1e-3, 1e-5], probe=xq, weights=wq, engine=Engine(full_every=3))
    feats = []
    for _ in range(4):
        feats.append(_hidden(model, xq))
        loss = (model(xq) - xq.sin()).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(loss=loss)
    mon.close()
    rows = mon.history
    assert len(rows) == 8
    for row in rows:
        phi = feats[row["step"]][int(row["layer"][-1]) - 1]
        assert _check_counts(row, reference.eps_rank(phi, [1e-3, 1e-5], weights=wq, mode="integral"), [1e-3, 1e-5]) == 0
        lam = reference.eigenvalues(phi, weights=wq, mode="integral")
        assert row["trace"] == pytest.approx(float(lam.sum()), rel=1e-9)
        assert row["participation_ratio"] == pytest.approx(float(lam.sum() ** 2 / lam.square().sum()), rel=1e-6)
        solved = row["step"] % 3 == 0
        assert row["spectrum_solved"] == int(solved)
        if solved:
            er = reference.entropy_rank(phi, weights=wq, mode="integral")
            assert row["entropy_rank"] == pytest.approx(float(er), rel=1e-3)
            assert row["lambda_max"] == pytest.approx(float(lam[0]), rel=1e-9)
        else:
            assert math.isnan(row["entropy_rank"]) and math.isnan(row["lambda_1"])


@pytest.mark.parametrize(
    "center,relative,acc",
    [(False, None, None), (True, None, None), (False, "max", None), (True, "trace", None), (False, None, "float32")],
)
def test_batched_layers_give_the_layer_by_layer_rows(monkeypatch, center, relative, acc):
    """The small layers' matrices formed together (core.from_features_many), their batched
    eigensolve, measures and certified counts (ExactEngine.record_many) give each layer's row as
    its own from_features() and record() do, entropy_rank_err and the bounds included (a float32
    Gram leaves the 1e-6 counts unproven: lower < upper)."""
    model = _tanh_mlp(width=24)
    xq, wq = trapezoid(-1, 1, 300)
    features = Features(mode="integral", center=center, acc_dtype=getattr(torch, acc) if acc else None)

    def run() -> list[dict]:
        mon = RankMonitor(
            model, "all_hidden", [1e-3, 1e-6], relative=relative, probe=Probe(xq, weights=wq), features=features
        )
        return _rows(mon)

    batched = run()
    monkeypatch.setattr(
        engines.ExactEngine,
        "record_many",
        lambda self, layers, inps, full: [self.record(li, i, full) for li, i in zip(layers, inps, strict=True)],
    )
    monkeypatch.setattr(
        core,
        "from_features_many",
        lambda phis, w, mode, backend: [core.from_features(p, w, mode, False, backend, torch.float64) for p in phis],
    )
    single = run()
    assert len(batched) == len(single) == 3
    if acc == "float32":
        assert any(r["eps_rank_lower@1e-06"] < r["eps_rank_upper@1e-06"] for r in single)
    for a, b in zip(batched, single, strict=True):
        assert {c for c, v in b.items() if isinstance(v, int) and c.startswith("eps_rank")} >= {
            f"eps_rank{kind}@{e}" for kind in ("", "_certified", "_lower", "_upper") for e in ("0.001", "1e-06")
        }
        for col, v in b.items():
            if isinstance(v, int):
                assert a[col] == v, col
            elif isinstance(v, float) and not math.isnan(v) and col != "wall_time":
                assert a[col] == pytest.approx(v, rel=1e-12, abs=1e-300), col


class _Poison(nn.Module):
    """NaN into one feature while ``on``: the non-finite activation of one layer."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.index_fill(1, torch.tensor([0]), float("nan")) if self.on else h


def test_a_non_finite_layer_among_layers_formed_together_is_flagged_alone():
    """Three layers of one width formed into one stack: NaN features in the last one flag its row
    (nonfinite, NaN measures); the other two rows are those of the clean run, each equal to the
    float64 reference of its features."""
    eps = [1e-3, 1e-6]
    xq, wq = trapezoid(-1, 1, 400)

    def run(poisoned: bool) -> list[dict]:
        model = _tanh_mlp(width=32)
        poison = _Poison()
        poison.on = poisoned
        model = nn.Sequential(*model[:-1], poison, model[-1])
        mon = RankMonitor(model, ["1", "3", "6"], eps, probe=Probe(xq, weights=wq), features=Features(mode="integral"))
        return _rows(mon)

    clean, bad = run(False), run(True)
    assert [r["nonfinite"] for r in bad] == [False, False, True]
    assert all(math.isnan(bad[2][c]) for c in ("eps_rank@0.001", "entropy_rank", "lambda_1", "trace"))
    feats = _hidden(_tanh_mlp(width=32), xq)
    for k in range(2):
        for col, v in clean[k].items():
            if col != "wall_time" and isinstance(v, (int, float)) and not isinstance(v, bool):
                assert bad[k][col] == v or (math.isnan(v) and math.isnan(bad[k][col])), col
        ref = reference.eps_rank(feats[k], eps, weights=wq, mode="integral")
        assert _check_counts(bad[k], ref, eps) == 0


def test_entropy_rank_gradient_is_autograds():
    """The closed-form ∂erank/∂λ behind entropy_rank_err equals autograd's, every convention."""
    torch.manual_seed(1)
    lam = torch.rand(12, dtype=torch.float64).pow(6).sort(descending=True).values
    lam[9:] = 0
    for floor in (1e-12, float(lam[4])):
        for kw in ({}, {"basis": "lambda"}, {"fudge": 1e-3}, {"components": 5}):
            x = lam.clone().requires_grad_(True)
            value = formulas.entropy_rank_from_eigenvalues(x, floor, **kw)
            (grad,) = torch.autograd.grad(value, x)
            v, g = formulas.entropy_rank_gradient(lam, floor, **kw)
            assert float(v) == pytest.approx(float(value), rel=1e-14)
            assert torch.allclose(g, grad, rtol=1e-9, atol=1e-12 * float(grad.abs().max())), kw


class _ScaleInPlace(nn.Module):
    """Doubles its input in place: a later op changing an activation the monitor captured."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul_(2.0)


def test_probe_activation_changed_in_place_later_is_measured_as_captured():
    """The probe's activations are kept without a copy; a model that changes one in place later in
    the forward (here: the captured Tanh output doubled by the next module) is probed again with
    copies, so the row is still that of the values at the capture (the float64 reference)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), _ScaleInPlace(), nn.Linear(16, 1))
    xq, wq = trapezoid(-1, 1, 300)
    eps = [1e-2, 1e-4, 1e-6]
    mon = RankMonitor(model, ["1"], eps, probe=Probe(xq, weights=wq), features=Features(mode="integral"))
    rows = _rows(mon, steps=2)
    assert mon.capture.copy_probe
    with torch.no_grad():
        phi = model[1](model[0](xq))  # the Tanh output before the in-place doubling
    ref = reference.eps_rank(phi, eps, weights=wq, mode="integral")
    for row in rows:
        assert _check_counts(row, ref, eps) == 0
        assert row["trace"] == pytest.approx(float((phi.double().square() * wq[:, None]).sum()), rel=1e-12)
