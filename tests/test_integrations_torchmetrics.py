"""EffectiveRank (torchmetrics): batches and ranks add up to the float64 reference of all rows."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip("torchmetrics")
from effrank_fast.integrations.torchmetrics import EffectiveRank  # noqa: E402

EPS = [1e-1, 1e-2, 1e-3]


def _features(n=300, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -2.5, d)  # a graded spectrum: the ε's cut it at different places
    return torch.randn(n, d, generator=g) @ torch.diag(scales) @ torch.linalg.qr(torch.randn(d, d, generator=g))[0]


def _reference(phi, weights=None, center=False, mode="mean"):
    x = phi.double().numpy()
    w = np.ones(len(x)) if weights is None else weights.double().numpy()
    if center:
        x = x - (w @ x) / w.sum()
    m = x.T @ (w[:, None] * x)
    if mode == "mean":
        m = m / w.sum()
    lam = np.linalg.eigvalsh(m)
    sigma = np.sqrt(lam[lam > 0])  # the package's default entropy rank is over singular values
    p = sigma / sigma.sum()
    return {
        **{f"eps_rank@{e:g}": int((lam > e).sum()) for e in EPS},
        "entropy_rank": float(np.exp(-(p * np.log(p)).sum())),
        "stable_rank": float(lam.sum() / lam.max()),
        "participation_ratio": float(lam.sum() ** 2 / (lam**2).sum()),
    }


def _check(out, ref):
    for e in EPS:
        assert int(out[f"eps_rank@{e:g}"]) == ref[f"eps_rank@{e:g}"]
        assert bool(out[f"eps_rank_certified@{e:g}"])
    for k in ("stable_rank", "participation_ratio", "entropy_rank"):
        assert float(out[k]) == pytest.approx(ref[k], rel=1e-9)


@pytest.mark.parametrize("center", [False, True])
def test_batches_add_up_to_the_reference_of_all_rows(center):
    phi = _features()
    metric = EffectiveRank(d=12, eps=EPS, center=center)
    for chunk in phi.split(70):
        metric.update(chunk)
    _check(metric.compute(), _reference(phi, center=center))
    metric.reset()
    metric.update(phi[:5])
    assert int(metric.compute()["eps_rank@0.001"]) == _reference(phi[:5], center=center)["eps_rank@0.001"]


def test_weighted_integral_mode():
    phi = _features(n=200)
    w = torch.rand(200, dtype=torch.float64) * 0.01
    metric = EffectiveRank(d=12, eps=EPS, mode="integral")
    metric.update(phi[:120], w[:120])
    metric.update(phi[120:], w[120:])
    _check(metric.compute(), _reference(phi, w, mode="integral"))


def test_bad_input_names_the_argument():
    metric = EffectiveRank(d=12)
    with pytest.raises(ValueError, match=r"phi must be \[N, 12\].*movedim\(1, -1\)"):
        metric.update(torch.randn(2, 12, 3, 3))
    with pytest.raises(ValueError, match="mode='integral' needs weights"):
        EffectiveRank(d=12, mode="integral").update(torch.randn(4, 12))
    with pytest.raises(ValueError, match="d must be a positive int"):
        EffectiveRank(d=0)


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        phi = _features()
        metric = EffectiveRank(d=12, eps=EPS, center=True)
        metric.update(phi.chunk(world)[rank])
        res = metric.compute()  # torchmetrics all-reduces the summed states (dist_reduce_fx="sum")
        out[rank] = {k: float(v) for k, v in res.items()}
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_equal_one_process_on_the_concatenated_rows():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    ref = _reference(_features(), center=True)
    for r in (0, 1):
        _check(out[r], ref)
