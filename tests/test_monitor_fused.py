"""RankMonitor(fused=True) runs the fused linear_act_gram kernel on the monitor's ``gram_backend``.

A bf16 MLP on a quadrature probe, monitored twice: fused (the Gram of h' = tanh(x Wᵀ + b) formed
from the Linear's input by the Triton kernel) and unfused (the Triton SYRK of torch's layer output
h). Against float64 Grams of the same activations:

- unfused vs Gram64(h), fused vs Gram64(h'): the Gram contract, ≤ 2× an fp32 SIMT Gram + 4 fp32
  roundings (ops/gram/README.md); h' is the kernel's own activations (linear_act_gram with
  return_activations, the same tiles and roundings);
- h' is a recomputation whose two roundings (linear output, activation) may each land one bf16
  ulp (≤ eps·|h|; tanh'(z)·|z| ≤ |tanh z|) away from h's, so every product moves by
  ≤ (4eps + 4eps²)·|h_i||h_j|: ‖Gram64(h') − Gram64(h)‖ ≤ (4eps + 4eps²)·‖|H|ᵀ diag(w) |H|‖;
- ε-counts of both monitors equal Gram64(h)'s at thresholds farther from its eigenvalues than
  both Grams' distance to it (Weyl: |Δλ| ≤ ‖ΔM‖₂ ≤ ‖ΔM‖_F).
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

pytest.importorskip("triton")

import effrank_fast as ef  # noqa: E402
from effrank_fast.monitor.accumulate import GramAccumulator  # noqa: E402
from effrank_fast.monitor.measure import LayerMeasurer  # noqa: E402
from effrank_fast.ops.gram import triton as gt  # noqa: E402
from effrank_fast.ops.linear_act_gram import linear_act_gram  # noqa: E402
from effrank_fast.ops.linear_act_gram import triton as lt  # noqa: E402

U32 = 2.0**-24
FLOOR = 4 * U32
EPS16 = torch.finfo(torch.bfloat16).eps


def _model(device):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 24), nn.Tanh(), nn.Linear(24, 20), nn.Tanh(), nn.Linear(20, 1))
    return net.to(device, torch.bfloat16)


def _activations(model, x):
    """{label: (torch's layer output h, the fused kernel's h')} for layers="all_hidden"."""
    out = {}
    with torch.no_grad():
        for label, i in (("hidden1", 0), ("hidden2", 2)):
            lin = model[i]
            h = model[i + 1](lin(x))
            w1 = torch.ones(x.shape[0], device=x.device)
            _, h_kernel = linear_act_gram(x, lin.weight, lin.bias, "tanh", None, w1, True, backend="triton")
            out[label] = (h, h_kernel)
            x = h
    return out


def _monitor_grams(model, probe, w, monkeypatch, **kw):
    """(the monitor's Gram per layer, its history) after one measured step."""
    grams = []
    real_inputs = LayerMeasurer._inputs

    def inputs(self, layers, accs, errors):  # the matrix each layer's row is measured on
        out = real_inputs(self, layers, accs, errors)
        grams.extend(inp.sp.matrix for _, inp in out)
        return out

    monkeypatch.setattr(LayerMeasurer, "_inputs", inputs)
    with ef.RankMonitor(model, layers="all_hidden", probe=probe, weights=w, **kw) as mon:
        mon.step()
        labels = [layer.label for layer in mon.layers]
    monkeypatch.setattr(LayerMeasurer, "_inputs", real_inputs)
    return dict(zip(labels, grams, strict=True)), mon.history


def _gram64(h, w):
    h64 = h.double().cpu()
    return h64.T @ (h64 * w.double().cpu()[:, None])


def _contract(h, w, ref):
    """Frobenius tolerance of an fp32 Gram of h: 2× the fp32 SIMT Gram's error + 4 roundings."""
    hs = h.float() * w.float().sqrt()[:, None]
    simt = float(((hs.T @ hs).double().cpu() - ref).norm() / ref.norm())
    return (2 * simt + FLOOR) * float(ref.norm())


def _safe_eps(spectra, margin):
    """Three thresholds between eigenvalues, farther than ``margin[label]`` from all of them."""
    lo = min(float(lam.max()) for lam in spectra.values()) * 1e-4
    hi = max(float(lam.max()) for lam in spectra.values())
    grid = torch.logspace(torch.log10(torch.tensor(lo)), torch.log10(torch.tensor(hi)), 400, dtype=torch.float64)
    ok = [float(e) for e in grid if all(float((lam - e).abs().min()) > margin[k] for k, lam in spectra.items())]
    assert len(ok) >= 3, "no threshold is safely away from the spectra; change the seed"
    return [ok[0], ok[len(ok) // 2], ok[-1]]


def _check_fused_monitor(device, monkeypatch):
    model = _model(device)
    xq, wq = ef.quadrature.trapezoid(-1.0, 1.0, 257)
    probe, w = xq.to(device, torch.bfloat16), wq.to(device, torch.float32)
    acts = _activations(model, probe)
    ref = {k: _gram64(h, w) for k, (h, _) in acts.items()}
    ref_kernel = {k: _gram64(hk, w) for k, (_, hk) in acts.items()}
    tol = {k: _contract(h, w, ref[k]) for k, (h, _) in acts.items()}
    tol_kernel = {k: _contract(hk, w, ref_kernel[k]) for k, (_, hk) in acts.items()}
    shift = {k: float((ref_kernel[k] - ref[k]).norm()) for k in acts}
    for k, (h, _) in acts.items():
        a = h.double().cpu().abs()
        assert shift[k] <= (4 * EPS16 + 4 * EPS16**2) * float(_gram64(a, w).norm()), k
    spectra = {k: torch.linalg.eigvalsh(r) for k, r in ref.items()}
    eps = _safe_eps(spectra, {k: max(tol[k], tol_kernel[k] + shift[k]) for k in acts})

    fused_launches, syrk_launches = [], []
    real_lag, real_syrk = lt._launch, gt._launch_syrk
    monkeypatch.setattr(lt, "_launch", lambda *a, **k: fused_launches.append(1) or real_lag(*a, **k))
    monkeypatch.setattr(gt, "_launch_syrk", lambda *a, **k: syrk_launches.append(1) or real_syrk(*a, **k))
    kw = {"eps": eps, "gram_backend": "triton"}
    fused, fused_rows = _monitor_grams(model, probe, w, monkeypatch, fused=True, **kw)
    assert fused_launches and not syrk_launches, "fused=True must run the fused Triton kernel, and only it"
    fused_launches.clear()
    plain, plain_rows = _monitor_grams(model, probe, w, monkeypatch, **kw)
    assert syrk_launches and not fused_launches

    for k in acts:
        assert float((plain[k].double().cpu() - ref[k]).norm()) <= tol[k], k
        assert float((fused[k].double().cpu() - ref_kernel[k]).norm()) <= tol_kernel[k], k
        assert torch.equal(fused[k], fused[k].T)
    for f, p in zip(fused_rows, plain_rows, strict=True):
        assert f["layer"] == p["layer"] and not f.get("error") and not p.get("error")
        want = [int((spectra[f["layer"]] > e).sum()) for e in eps]
        assert [f[f"eps_rank@{e:g}"] for e in eps] == [p[f"eps_rank@{e:g}"] for e in eps] == want


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="CPU Triton needs TRITON_INTERPRET=1")
def test_fused_monitor_runs_the_triton_kernel_interpreted(monkeypatch):
    _check_fused_monitor("cpu", monkeypatch)


@pytest.mark.gpu
def test_gpu_fused_monitor_runs_the_triton_kernel(monkeypatch):
    _check_fused_monitor("cuda", monkeypatch)


class _Recorder:
    def __init__(self):
        self.kwargs = []

    def __call__(self, x, weight, bias, act, gram_out, weights, **kwargs):
        self.kwargs.append(kwargs)


@pytest.mark.parametrize(
    "backend,env,want",
    [
        ("auto", None, {}),  # the kernel's own default: a drop-in kernel without backend= still works
        ("torch", None, {"backend": "torch"}),
        ("triton", None, {"backend": "triton"}),
        ("native", None, {}),  # linear_act_gram has no native backend: "auto"
        ("auto", "triton", {"backend": "triton"}),  # EFFRANK_FAST_BACKEND, as for the unfused Gram
    ],
)
def test_fused_kernel_gets_the_accumulators_backend(backend, env, want, monkeypatch):
    if env is None:
        monkeypatch.delenv("EFFRANK_FAST_BACKEND", raising=False)
    else:
        monkeypatch.setenv("EFFRANK_FAST_BACKEND", env)
    kernel = _Recorder()
    acc = GramAccumulator(center=False, acc_dtype=None, backend=backend)
    lin = nn.Linear(3, 4)
    acc.add_fused(torch.randn(5, 3), ef.monitor.layers.Fused(lin, "tanh"), None, kernel)
    assert kernel.kwargs == [want]


def test_fused_monitor_under_autocast_computes_in_the_autocast_dtype():
    """Under bf16 autocast a Linear meets a bf16 activation with its fp32 weight; the fused path
    must compute in bf16 as the layer did (it used to raise, giving an error row per layer). The
    fused Gram of the recomputed h' = tanh(bf16(x) bf16(W)ᵀ + bf16(b)) matches a float64 Gram of
    the layer's own output h within the two bf16 roundings of the recomputation (module docstring)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 1))
    x = torch.rand(200, 2) * 2 - 1
    mon = ef.RankMonitor(model, layers="all_hidden", eps=[1e-3], fused=True, gram_backend="torch")
    with mon:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h1 = model[1](model[0](x))
            h2 = model[3](model[2](h1))
            model[4](h2)
        mon.step(loss=0.0)
    assert h1.dtype == torch.bfloat16
    rows = {r["layer"]: r for r in mon.history}
    assert set(rows) == {"hidden1", "hidden2"}
    for label, h in (("hidden1", h1), ("hidden2", h2)):
        assert rows[label]["error"] == "", rows[label]["error"]
        ref = _gram64(h.detach(), torch.full((200,), 1 / 200))
        habs = h.detach().double().abs()
        tol = (4 * EPS16 + 4 * EPS16**2) * float((habs.T @ habs / 200).norm()) + 1e-6 * float(ref.norm())
        assert abs(rows[label]["lambda_max"] - float(torch.linalg.eigvalsh(ref)[-1])) <= tol
